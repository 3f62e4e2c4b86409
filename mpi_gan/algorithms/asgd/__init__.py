"""Asynchronous parameter-server SGD with AdaComp's staleness-aware step (Hardy et al. 2017)."""

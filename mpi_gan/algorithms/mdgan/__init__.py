"""MD-GAN (Hardy, Le Merrer, Sericola, IPDPS 2019): one generator on a server, one
discriminator per worker, error feedback and peer-to-peer discriminator swaps."""

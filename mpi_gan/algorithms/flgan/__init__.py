"""FL-GAN, the federated baseline of the MD-GAN paper: every worker trains a full GAN on
its shard; after every round the server averages all G and D (FedAvg) and sends the
averages back."""

"""The demo preset's generators: tiny random-weight models, a synthetic COCO and CIFAR-100, demo SAEs."""

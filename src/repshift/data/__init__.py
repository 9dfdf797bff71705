"""Input data: sources (COCO, CIFAR-100, prompt sets) behind one dispatch, images and their transforms, downloads."""

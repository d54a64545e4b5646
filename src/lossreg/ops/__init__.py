"""Box and anchor operations on top of torchvision.ops."""

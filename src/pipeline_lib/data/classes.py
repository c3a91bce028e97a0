"""Fashion-MNIST's class names, in label order, apart from the reader: the workflow's parse resolves class
lists with them on every `snakemake` start, and must not wait for torch to load."""

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

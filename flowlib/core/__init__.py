"""The flows themselves: torch only, knowing nothing of runs, stores, torchrun or studies.

    ops           squeeze / unsqueeze, the checkerboard mask, the channel split, the latent fold
    permutations  reverse, shuffle and the invertible 1×1 convolutions (plain and LU)
    layers        ActNorm, the couplings and their networks, the logit and dequantisation layers
    level         Level: one scale's steps, its split and its latent's prior (split2d)
    model         FlowModel: the multi-scale flow as a loop over its levels, bits/dim
    conditioning  class-conditional priors' tables, the classifier head, the marginal over labels
    checkpoint    saving and loading models safely
    flows2d       two-dimensional flows for the 2-D page
"""

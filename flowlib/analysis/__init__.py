"""Looking inside a trained model: the walk through it one operation at a time, and how its
likelihood scores images of other kinds.

    walk       walk_forward / walk_backward: every operation's tensor and log-determinant
    ood        bits/dim of test images, other datasets, noise and simple pictures
    classes    a conditional flow as a classifier, class samples, latent arithmetic
    reference  reference curves: what a run of these settings should show
"""

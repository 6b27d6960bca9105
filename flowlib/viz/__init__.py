"""Pictures of what a flow does, shared by the pages. No Streamlit import here.

    images         numpy / PIL pictures: grids, labels, PNG bytes, latents in a diverging colour map
    masks          squeeze and mask tracing: which pixel goes where, which values a coupling changes
    figures        plotly figures: matrices, ActNorm scales, the bits/dim budget
    latents        interpolation between latents; an image's way to noise and back
    uploads        a user's picture made fit for a model; a stroke drawn from sliders
    flows2d        plotly figures of the two-dimensional flows
    study_figures  plotly figures of a study's curves
    classes        a class-conditional flow: p(y | x) as bars, a row of samples per class

Import from the module that holds a name (``from flowlib.viz.images import png_bytes``), so a
process that needs only pictures never loads plotly.
"""

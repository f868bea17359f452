"""napari dock widgets (Qt). Imported only by napari through ``napari.yaml``, never by
``import napari_glkm``; the computation lives in :mod:`napari_glkm.backend`."""

"""A local web page over the toolkit: search by image, duplicate groups, palettes, training curves.

:func:`encoder.web.app.create_app` builds the FastAPI app (``search.py serve`` runs it with
uvicorn); :mod:`encoder.web.service` does the work without HTTP; :mod:`encoder.web.guard` holds
the token, the upload limit and the safety headers; ``static/`` the pages (plain HTML, one
script, one style sheet: no CDN, no build step). FastAPI is imported only by ``app``/``guard``,
so importing this package costs nothing.
"""

"""``lorahub serve``: the catalogue as a local web site and a JSON API.

Importing this package imports nothing else: :mod:`lorahub.web.svg` (the lineage graph and loss curve, also drawn
by ``lorahub lineage --svg`` and ``lorahub show --loss-plot``) needs only the standard library, while
:mod:`lorahub.web.app` and :mod:`lorahub.web.server` need the ``serve`` extra (Starlette, uvicorn, Jinja2).
"""

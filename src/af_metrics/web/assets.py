"""Templates, our static files and plotly.js: shared by the live pages and the HTML report.

plotly.js comes from the ``plotly`` Python package, which ships the minified bundle as package
data: the pages serve it from this machine and the report inlines it, so no page ever needs
a CDN or the internet.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

HERE = Path(__file__).parent
STATIC = HERE / "static"

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
)


@cache
def plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()


@cache
def plotly_version() -> str:
    import plotly

    return plotly.__version__

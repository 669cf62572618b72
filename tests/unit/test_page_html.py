"""The pipeline page's document: its data embedded so that no value can end the script
element, and JSON that a browser parses (no NaN)."""

import json
import math
import re

from services.api.page_html import render_page
from services.api.report import _finite


def embedded(html: str) -> object:
    match = re.search(
        r'<script type="application/json" id="headwater-data">(.*?)</script>', html, re.S
    )
    assert match is not None
    return json.loads(match.group(1))


def test_live_the_page_embeds_no_data_and_asks_the_api():
    html = render_page(None)
    assert embedded(html) is None
    assert "{{" not in html  # every placeholder filled
    assert "function chart(" in html
    assert "<style>" in html


def test_a_value_holding_a_closing_script_tag_stays_data():
    data = {"pipelines": {"p": {"reason": "</script><script>alert(1)</script>"}}}
    html = render_page(data, title="report <p>")
    assert html.count("</script>") == 2  # the data's and the code's elements, nothing more
    assert embedded(html) == data
    assert "<title>report &lt;p&gt;</title>" in html


def test_metrics_without_a_value_become_null_for_json():
    value = {"a": [math.nan, 1.0, {"b": math.inf}], "c": "x"}
    assert _finite(value) == {"a": [None, 1.0, {"b": None}], "c": "x"}

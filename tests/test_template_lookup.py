"""Which template file a part comes from, per locale."""

from __future__ import annotations

from gateway.templating import Templates


def test_parts_come_from_one_locale_folder(tmp_path):
    for name in ("fr/email.subject.j2", "fr/email.html.j2", "en/email.subject.j2", "json.j2"):
        path = tmp_path / "receipt" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    templates = Templates(tmp_path, "fr", {})
    assert templates.find("receipt", "email.subject", "en-GB") == "receipt/en/email.subject.j2"
    # No English HTML: none, rather than the French one inside an English email.
    assert templates.find("receipt", "email.html", "en") is None
    assert templates.find("receipt", "email.html", "fr-BE") == "receipt/fr/email.html.j2"
    assert templates.find("receipt", "email.html", "de") == "receipt/fr/email.html.j2"  # default
    assert templates.find("receipt", "json", "en") == "receipt/json.j2"  # locale-free part

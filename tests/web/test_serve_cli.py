"""`search.py serve` as a user starts it: several processes answer the same queries as one."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _post_image(url: str, path: Path, index: str) -> dict:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="index"\r\n\r\n{index}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url + "/api/query", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    return json.loads(urllib.request.urlopen(req, timeout=30).read())


def test_two_processes_serve_the_same_answers(web_data, start_server):
    proc, url = start_server([web_data["phash"], web_data["ae"], "--processes", "2"])
    try:
        answers = [_post_image(url, web_data["upload"], "ae") for _ in range(6)]  # spread over both processes
        ids = [[n["id"] for n in a["neighbours"]] for a in answers]
        assert len(ids[0]) == 5 and all(i == ids[0] for i in ids)
        assert _post_image(url, web_data["upload"], "phash")["neighbours"][0]["distance"] == 0
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "with 2 processes" in out

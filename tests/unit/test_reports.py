"""Reports on cached answers, in process: a wrong hit is never served to that request again,
the others still are; a wrong answer to its own request goes; bad reports get clear errors."""

from typing import Any

from inprocess import MODEL, Upstream, running, sdk

ADMIN = {"Authorization": "Bearer admin-secret"}


def ask(client: Any, prompt: str) -> tuple[str, str | None]:
    raw = sdk(client).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}]
    )
    return raw.headers["x-kallm-cache"], raw.headers.get("x-kallm-entry")


def request(prompt: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}


def test_a_reported_wrong_hit_is_blocked_for_that_request_only():
    upstream = Upstream()
    with running(upstream, admin_token="admin-secret") as (client, _):
        assert ask(client, "How many legs does a spider have?")[0] == "MISS"
        cache, entry = ask(client, "How many legs do spiders have?")
        assert cache == "HIT" and entry
        reported = client.post(
            "/admin/reports",
            headers=ADMIN,
            json={"entry": entry, "request": request("How many legs do spiders have?"),
                  "verdict": "wrong"},
        )  # fmt: skip
        assert reported.status_code == 201, reported.text
        report = reported.json()["report"]
        assert report["right"] is False and 0.8 < report["similarity"] < 1
        assert "spiders have" in report["asked_text"]  # the text the lookup embeds
        assert not reported.json()["removed_entry"]
        calls = len(upstream.calls)
        assert ask(client, "How many legs do spiders have?")[0] == "MISS"  # blocked
        assert len(upstream.calls) == calls + 1
        # The entry still serves its own request, and the pair answered upstream now hits.
        assert ask(client, "How many legs does a spider have?")[0] == "HIT"
        assert ask(client, "How many legs do spiders have?")[0] == "HIT"
        listed = client.get("/admin/reports", headers=ADMIN).json()["reports"]
        assert [r["id"] for r in listed] == [report["id"]]
        metrics = client.get("/metrics").text
        assert 'kallm_reports_total{verdict="wrong"} 1.0' in metrics
        assert "kallm_blocked_hits_total 1.0" in metrics
        assert client.get("/stats").json()["blocked_hits"] == 1


def test_a_wrong_answer_to_its_own_request_removes_the_entry_and_right_blocks_nothing():
    with running(Upstream(), admin_token="admin-secret") as (client, _):
        ask(client, "Name three primary colours.")
        cache, entry = ask(client, "Name three primary colours.")
        assert cache == "HIT"
        right = {"entry": entry, "request": request("Name three primary colours."),
                 "verdict": "right"}  # fmt: skip
        assert client.post("/admin/reports", headers=ADMIN, json=right).status_code == 201
        assert ask(client, "Name three primary colours.")[0] == "HIT"
        wrong = right | {"verdict": "wrong"}
        reported = client.post("/admin/reports", headers=ADMIN, json=wrong)
        assert reported.json()["removed_entry"] is True
        assert ask(client, "Name three primary colours.")[0] == "MISS"


def test_bad_reports_get_clear_errors():
    with running(Upstream(), admin_token="admin-secret") as (client, _):
        ask(client, "What is the capital of Peru?")
        entry = ask(client, "What is the capital of Peru?")[1]
        cases = [
            ({"entry": entry, "request": request("x")}, 400, "verdict"),
            ({"entry": 7, "request": request("x"), "verdict": "wrong"}, 400, "entry id"),
            ({"entry": "nope", "request": request("x"), "verdict": "wrong"}, 404, "No such"),
            ({"entry": entry, "request": {"model": MODEL}, "verdict": "wrong"}, 400, "request"),
        ]
        for body, status, said in cases:
            answer = client.post("/admin/reports", headers=ADMIN, json=body)
            assert (answer.status_code, said in answer.text) == (status, True), answer.text
        assert client.post("/admin/reports", json={}).status_code == 401
        assert client.get("/admin/reports", headers=ADMIN).json() == {"reports": []}


def test_a_miss_names_its_nearest_entry_for_a_should_have_hit_report():
    with running(Upstream(), admin_token="admin-secret") as (client, _):
        ask(client, "What is the boiling point of water?")
        raw = sdk(client).chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": "At what temperature does water boil?"}],
            extra_headers={"X-Kallm-Threshold": "0.999"},  # a MISS, whatever the verifier says
        )
        assert raw.headers["x-kallm-cache"] == "MISS" and "x-kallm-entry" not in raw.headers
        nearest = raw.headers["x-kallm-nearest"]
        body = {"entry": nearest, "request": request("At what temperature does water boil?"),
                "verdict": "right"}  # fmt: skip
        reported = client.post("/admin/reports", headers=ADMIN, json=body)
        assert reported.status_code == 201 and reported.json()["report"]["right"] is True
        assert 'kallm_reports_total{verdict="right"} 1.0' in client.get("/metrics").text

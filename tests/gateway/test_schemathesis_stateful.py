"""Stateful property-based run over the whole API: schemathesis' state machine follows the OpenAPI links
of the published document (a submitted job's id into get, cancel, metrics, serve, chat and steer; a
cancelled job's id into its event stream; a created key's id into revoking it; a key's tenant into the job
listing), generating every other input, and each response must be no server error and match the document
(status code, content type, body). Bounded: derandomized, 40 scenarios of up to 8 steps, 10-15 seconds.
No job runner and no Ray: jobs stay queued until cancelled.

Generated job specs rarely pass the gateway's semantic checks (existing data files, batch sizes that fit)
and Hypothesis picks among some 30 rules per step, so each scenario starts from a valid queued job, a
cancelled one and a new tenant's key, put where their responses' links start; the machine chains from them
as from anything it creates itself.

Also the regression tests for what the stateful run found.

Driven through schemathesis' Python API with Hypothesis directly (its pytest plugin does not support
pytest 9 yet)."""

from __future__ import annotations

from collections import Counter

import httpx
import ray
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import Bundle, initialize, multiple
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.stateful import run_state_machine_as_test
from schemathesis.generation.stateful.state_machine import StepInput

from gateway.server import GatewayServer
from gateway.settings import Quotas
from tests.gateway.conftest import ADMIN_KEY, SPEC_YAML, client, submit
from tests.gateway.test_schemathesis import CHECKS

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
# Only the document's own links: the ones schemathesis infers would also open a queued job's live event
# stream (follow=true), which lasts as long as the job.
ONLY_DECLARED_LINKS = SchemathesisConfig.from_dict(
    {"phases": {"stateful": {"inference": {"algorithms": []}}}}
)
RUN = settings(
    max_examples=40,
    stateful_step_count=8,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
SUBMIT, GET_JOB, CANCEL = "POST /v1/jobs", "GET /v1/jobs/{job_id}", "POST /v1/jobs/{job_id}/cancel"
CREATE_KEY, EVENTS = "POST /v1/admin/keys", "GET /v1/jobs/{job_id}/events"
SPEC = yaml.safe_load(SPEC_YAML)


class Record:
    """What the run did: calls per (operation, status), links followed (with the linked value applied), ids
    of submitted jobs, ids fetched with a 200."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()
        self.links: Counter = Counter()
        self.created: set[str] = set()
        self.fetched: set[str] = set()

    def add(self, case, response) -> None:
        label = case.operation.label
        self.calls[label, response.status_code] += 1
        if label == SUBMIT and response.status_code == 201:
            self.created.add(response.json()["id"])
        if label == GET_JOB and response.status_code == 200:
            self.fetched.add(case.path_parameters["job_id"])


def workflow(doc: dict, url: str, record: Record):
    """The document's state machine, calling the gateway at `url` with the admin key."""
    schema = schemathesis.openapi.from_dict(doc, config=ONLY_DECLARED_LINKS)

    class Workflow(schema.as_state_machine()):
        @initialize(target=Bundle("seed"))  # each result lands in the bundle its response links from
        def seed(self):
            """A queued job, a cancelled one and a new tenant's key to start from."""
            queued = self.seed_call(SUBMIT, body=SPEC, media_type="application/json")
            ended = self.seed_call(SUBMIT, body=SPEC, media_type="application/json").response.json()["id"]
            cancelled = self.seed_call(CANCEL, path_parameters={"job_id": ended})
            key = self.seed_call(CREATE_KEY, body={"tenant": "stateful"}, media_type="application/json")
            return multiple(queued, cancelled, key)

        def seed_call(self, label: str, **parts):
            method, path = label.split(" ", 1)
            step = StepInput.initial(self.schema[path][method].Case(**parts))
            self.recorder.record_case(case=step.case)
            self.control.record_step(step, self.recorder)
            return self._step(step)

        def step(self, input):
            if input.transition is not None and input.is_applied:
                record.links[input.transition.id] += 1
            return super().step(input)

        def get_call_kwargs(self, case):
            return {"base_url": url, "headers": AUTH, "timeout": 30}

        def after_call(self, response, case):
            super().after_call(response, case)
            record.add(case, response)

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs, recorder=self.recorder)

    return Workflow


def test_stateful_links_hold(make_settings, monkeypatch):
    monkeypatch.setattr(ray, "init", _no_ray)  # a gateway without Ray must not start one (a 500 here)
    gw = make_settings(rate_per_s=1e6, rate_burst=1_000_000, quota=Quotas(max_jobs=10_000))
    record = Record()
    with GatewayServer(gw) as server:
        doc = httpx.get(f"{server.url}/openapi.json").json()
        run_state_machine_as_test(workflow(doc, server.url, record), settings=RUN)
    calls, links = record.calls, record.links
    summary = "\n".join(f"{k}: {n}" for k, n in sorted(calls.items()) + sorted(links.items()))
    assert calls.total() >= 200 and len({op for op, _ in calls}) >= 14, summary  # every linked operation
    assert len(links) >= 12, summary
    for followed in (
        "POST /v1/jobs -> [201] GetJob -> GET /v1/jobs/{job_id}",
        "POST /v1/jobs/{job_id}/cancel -> [202] JobEvents -> GET /v1/jobs/{job_id}/events",
        "POST /v1/admin/keys -> [201] RevokeKey -> DELETE /v1/admin/keys/{key_id}",
    ):
        assert links[followed], f"{followed} never followed\n{summary}"
    # submitted jobs were fetched by the ids their submissions returned; a cancelled job's events ended
    assert len(record.fetched & record.created) >= 2, summary
    for op, status in ((GET_JOB, 200), (EVENTS, 200), ("DELETE /v1/admin/keys/{key_id}", 204)):
        assert calls[op, status], summary


# ---------------------------------------------------------------- regressions found by the stateful run
def _no_ray(*args, **kwargs):
    raise AssertionError("the gateway started Ray")


def _without_ray(monkeypatch) -> None:
    """This process as a gateway without Ray sees it (the session may have joined Ray for other tests)."""
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", _no_ray)


def test_unserve_without_ray_does_nothing(gateway_server, admin_client, monkeypatch):
    """DELETE /v1/jobs/{id}/serve in a gateway without Ray called Ray Serve's status API, which starts a
    local Ray instance inside the gateway (a 500 where Ray cannot start). Nothing is served there: 204."""
    _without_ray(monkeypatch)
    jid = submit(admin_client)["id"]
    assert admin_client.delete(f"/v1/jobs/{jid}/serve").status_code == 204


def test_serve_without_ray_is_503(gateway_server, admin_client, gw_redis, monkeypatch):
    """Serving a checkpoint from a gateway without Ray is refused (503) instead of starting Ray."""
    from services.jobs import CheckpointEvent, publish_event

    _without_ray(monkeypatch)
    jid = submit(admin_client)["id"]
    publish_event(gw_redis, CheckpointEvent(job_id=jid, step=1, path="/ckpt/1"))
    r = admin_client.post(f"/v1/jobs/{jid}/serve", json={})
    assert r.status_code == 503 and "not connected to Ray" in r.json()["detail"], r.text


def test_documented_statuses(gateway_server, admin_client):
    """Revoking the key making the request is 409 (the stateful run got it, undocumented, following
    list_keys -> revoke_key to the admin's own key), and /v1/models answers 401 without a key (it documented
    only 200): both are in the document now."""
    doc = httpx.get(f"{gateway_server.url}/openapi.json").json()
    own = admin_client.get("/v1/whoami").json()["key_id"]
    assert admin_client.delete(f"/v1/admin/keys/{own}").status_code == 409
    assert "409" in doc["paths"]["/v1/admin/keys/{key_id}"]["delete"]["responses"]
    with client(gateway_server.url, None) as anonymous:
        assert anonymous.get("/v1/models").status_code == 401
    assert "401" in doc["paths"]["/v1/models"]["get"]["responses"]


def test_event_ids_are_ascii_digits(admin_client):
    """An event id of non-ASCII digits ('١-٠') passed the route's check (Python's \\d) and reached Redis,
    which refused it after the 200 stream had started: the connection dropped mid-response. Now 422, as
    the pattern the document gives it says."""
    jid = submit(admin_client)["id"]
    admin_client.post(f"/v1/jobs/{jid}/cancel")
    url = f"/v1/jobs/{jid}/events"
    r = admin_client.get(url, params={"after": "١-٠"})
    assert r.status_code == 422 and "is not a stream id" in r.json()["detail"], r.text
    assert admin_client.get(url, params={"after": "0-0", "follow": "false"}).status_code == 200

"""AuditClient: audit events to tierlog, batched in a background thread.

An event is given an id and a timestamp when it is recorded, so that every retry
sends the same event (tierlog stores an id once) at the time it happened. Events wait
in a bounded buffer; when it is full a new event is dropped, and that is reported (the
``dropped`` count, the ``on_drop`` callback and a warning), never hidden. A batch is
sent again with exponential backoff and jitter while tierlog is unreachable or answers
408, 429 or 5xx; events tierlog refuses as invalid (400 with their index) are reported
through ``on_error`` and the rest of the batch is sent again without them. ``close()``
(also run at interpreter exit) sends what is buffered.
"""

from __future__ import annotations

import atexit
import collections
import datetime as _dt
import gzip
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable, Dict, List, Optional

from .context import current_request

log = logging.getLogger("tierlog.client")

Event = Dict[str, Any]

#: Statuses after which the same batch is sent again.
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


class RejectedEvent(Exception):
    """An event tierlog refused as invalid (it is not sent again)."""

    def __init__(self, event: Event, status: int, reasons: List[str]):
        super().__init__(f"tierlog refused event {event.get('id')} ({status}): {'; '.join(reasons)}")
        self.event = event
        self.status = status
        self.reasons = reasons


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class AuditClient:
    """Sends audit events to tierlog's ``POST /audit/events``.

    ``url`` is tierlog's base URL, ``api_key`` a key with ``events.write``. Fields given
    here (``tenant_id``, ``application``) are put in every event that has none.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        tenant_id: Optional[str] = None,
        application: Optional[str] = None,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_buffer: int = 10_000,
        timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        compress: bool = True,
        on_drop: Optional[Callable[[Event], None]] = None,
        on_error: Optional[Callable[[RejectedEvent], None]] = None,
        close_at_exit: bool = True,
    ):
        if batch_size < 1 or max_buffer < 1:
            raise ValueError("batch_size and max_buffer must be at least 1")
        self.endpoint = url.rstrip("/") + "/audit/events"
        self._key = api_key
        self._defaults = {k: v for k, v in (("tenant_id", tenant_id), ("application", application)) if v}
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.compress = compress
        self.on_drop = on_drop
        self.on_error = on_error
        self._buffer: collections.deque = collections.deque()
        self._lock = threading.Condition()
        # Events recorded, and events settled (sent, refused or dropped): a flush
        # waits until the second catches up with the first as it was when called.
        self._recorded = 0
        self._settled = 0
        self._oldest = 0.0
        self._flushing = 0
        self._closing = False
        self._closed = threading.Event()
        self._give_up_at: Optional[float] = None
        self.sent = 0
        self.dropped = 0
        self.rejected = 0
        self._thread = threading.Thread(target=self._run, name="tierlog-client", daemon=True)
        self._thread.start()
        if close_at_exit:
            atexit.register(self.close)

    # -- recording ---------------------------------------------------------------

    def send(self, event: Event) -> str:
        """Queues one event (a dict in tierlog's event format) and returns its id.

        Missing ``id`` and ``timestamp`` are set now; missing ``request_id``,
        ``ip_address`` and ``user_agent`` come from the current request (see
        ``tierlog.asgi``); missing ``tenant_id``/``application`` from the client.
        """
        event = dict(event)
        event.setdefault("id", str(uuid.uuid4()))
        event.setdefault("timestamp", _now())
        for name, value in self._defaults.items():
            event.setdefault(name, value)
        for name, value in current_request().items():
            if value is not None:
                event.setdefault(name, value)
        with self._lock:
            if self._closing:
                self._drop([event], "the client is closed")
                return event["id"]
            self._recorded += 1
            if len(self._buffer) >= self.max_buffer:
                self._settled += 1
                self._drop([event], f"the buffer holds {self.max_buffer} events")
                return event["id"]
            if not self._buffer:
                self._oldest = time.monotonic()
            self._buffer.append(event)
            if len(self._buffer) >= self.batch_size:
                self._lock.notify_all()
        return event["id"]

    def _drop(self, events: List[Event], why: str) -> None:
        # Called with the lock held.
        self.dropped += len(events)
        log.warning("tierlog: %d audit event(s) dropped: %s (%d dropped so far)", len(events), why, self.dropped)
        if self.on_drop:
            for event in events:
                try:
                    self.on_drop(event)
                except Exception:  # noqa: BLE001 - a callback must not stop the client
                    log.exception("tierlog: on_drop failed")

    # -- typed helpers -------------------------------------------------------------

    def login_succeeded(self, user_id: str, **fields: Any) -> str:
        return self.send({"category": "auth", "action": "auth.login", "status": "success", "user_id": user_id,
                          "message": fields.pop("message", "user logged in"), **fields})

    def login_failed(self, user_id: Optional[str] = None, *, reason: Optional[str] = None, **fields: Any) -> str:
        event = {"category": "auth", "action": "auth.login_failed", "status": "failure", "level": "WARNING",
                 "message": fields.pop("message", reason or "login failed"), **fields}
        if user_id is not None:
            event["user_id"] = user_id
        if reason:
            event.setdefault("details", {})["reason"] = reason
        return self.send(event)

    def account_locked(self, user_id: str, *, failures: Optional[int] = None, **fields: Any) -> str:
        event = {"category": "auth", "action": "auth.account_locked", "status": "failure", "level": "WARNING",
                 "user_id": user_id, "message": fields.pop("message", "account locked"), **fields}
        if failures is not None:
            event.setdefault("details", {})["failures"] = failures
        return self.send(event)

    def logout(self, user_id: str, **fields: Any) -> str:
        return self.send({"category": "auth", "action": "auth.logout", "status": "success", "user_id": user_id,
                          "message": fields.pop("message", "user logged out"), **fields})

    def password_changed(self, user_id: str, **fields: Any) -> str:
        return self.send({"category": "auth", "action": "auth.password_changed", "status": "success",
                          "user_id": user_id, "message": fields.pop("message", "password changed"), **fields})

    def entity_created(self, resource: str, resource_id: str, after: Dict[str, Any], **fields: Any) -> str:
        return self._change("created", resource, resource_id, None, after, fields)

    def entity_updated(self, resource: str, resource_id: str, before: Dict[str, Any], after: Dict[str, Any],
                       **fields: Any) -> str:
        return self._change("updated", resource, resource_id, before, after, fields)

    def entity_deleted(self, resource: str, resource_id: str, before: Dict[str, Any], **fields: Any) -> str:
        return self._change("deleted", resource, resource_id, before, None, fields)

    def _change(self, verb: str, resource: str, resource_id: str, before: Optional[Dict[str, Any]],
                after: Optional[Dict[str, Any]], fields: Dict[str, Any]) -> str:
        changes = {}
        if before is not None:
            changes["before"] = before
        if after is not None:
            changes["after"] = after
        return self.send({"category": "audit", "action": f"{resource}.{verb}", "status": "success",
                          "resource": resource, "resource_id": str(resource_id), "changes": changes,
                          "message": fields.pop("message", f"{resource} {verb}"), **fields})

    def financial_transaction(self, transaction_id: str, amount: Any, currency: str, *,
                              action: str = "payment.transfer", account_id: Optional[str] = None,
                              counterparty: Optional[str] = None, **fields: Any) -> str:
        financial = {"transaction_id": transaction_id, "amount": str(amount), "currency": currency}
        if account_id is not None:
            financial["account_id"] = account_id
        if counterparty is not None:
            financial["counterparty"] = counterparty
        return self.send({"category": "financial", "action": action, "status": fields.pop("status", "success"),
                          "financial": financial, "message": fields.pop("message", "transaction executed"), **fields})

    # -- delivery ------------------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until every event recorded so far is sent, refused or dropped;
        False if that took longer than ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._recorded
            self._flushing += 1
            self._lock.notify_all()
            try:
                while self._settled < target:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._lock.wait(left if left is not None else 0.5)
            finally:
                self._flushing -= 1
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Sends what is buffered (trying for ``timeout`` seconds), then stops; what
        could not be sent by then is reported as dropped. True if everything buffered
        was sent (or refused as invalid), False if some had to be dropped."""
        with self._lock:
            if self._closing:
                return True
            dropped_before = self.dropped
            self._closing = True
            self._give_up_at = time.monotonic() + timeout
            self._lock.notify_all()
        self._closed.set()
        self._thread.join(timeout + self.timeout + 1)
        try:
            atexit.unregister(self.close)
        except Exception:  # noqa: BLE001
            pass
        with self._lock:
            return self._settled >= self._recorded and self.dropped == dropped_before

    def __enter__(self) -> "AuditClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _take(self) -> List[Event]:
        """The next batch: once ``batch_size`` events wait, the oldest has waited
        ``flush_interval``, or a flush or close asks; empty when closed and drained."""
        with self._lock:
            while True:
                if self._buffer:
                    due = self._oldest + self.flush_interval
                    if len(self._buffer) >= self.batch_size or self._closing or self._flushing or time.monotonic() >= due:
                        break
                    self._lock.wait(max(due - time.monotonic(), 0.001))
                elif self._closing:
                    return []
                else:
                    self._lock.wait(self.flush_interval)
            batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
            self._oldest = time.monotonic()
            return batch

    def _settle(self, count: int) -> None:
        with self._lock:
            self._settled += count
            self._lock.notify_all()

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return  # closing, and nothing left
            self._deliver(batch)

    def _deliver(self, batch: List[Event]) -> None:
        attempt = 0
        while batch:
            status, answer, retry_after = self._post(batch)
            if status == 200:
                self.sent += len(batch)
                self._settle(len(batch))
                return
            if status in (400, 413) and answer is not None:
                bad = self._refused(batch, status, answer)
                if bad:
                    batch = [e for i, e in enumerate(batch) if i not in bad]
                    self._settle(len(bad))
                    continue
            if status is not None and 400 <= status < 500 and status not in RETRYABLE:
                # The whole batch is refused (a bad key, for one): sending it again
                # cannot help.
                reasons = [str((answer or {}).get("error", {}).get("message", f"HTTP {status}"))]
                for event in batch:
                    self._report(RejectedEvent(event, status, reasons))
                self._settle(len(batch))
                return
            attempt += 1
            delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
            delay = random.uniform(delay / 2, delay)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.backoff_max))
            with self._lock:
                give_up = self._give_up_at
            if give_up is not None and time.monotonic() + delay > give_up:
                with self._lock:
                    self._drop(batch, f"tierlog could not be reached before close() gave up (last: {status or 'no answer'})")
                self._settle(len(batch))
                return
            log.info("tierlog: batch of %d not accepted (%s); sending again in %.1fs", len(batch), status or "no answer", delay)
            # close() ends the wait, so that its deadline is looked at at once.
            self._closed.wait(delay)

    def _refused(self, batch: List[Event], status: int, answer: Dict[str, Any]) -> Dict[int, List[str]]:
        """The events tierlog named as invalid, reported; their indexes."""
        bad: Dict[int, List[str]] = {}
        for field in answer.get("error", {}).get("fields", []) or []:
            index = field.get("index")
            if isinstance(index, int) and 0 <= index < len(batch):
                bad.setdefault(index, []).append(f"{field.get('field')}: {field.get('reason')}")
        if status == 413 and not bad and len(batch) == 1:
            bad[0] = [answer.get("error", {}).get("message", "too large")]
        for index, reasons in bad.items():
            self._report(RejectedEvent(batch[index], status, reasons))
        return bad

    def _report(self, error: RejectedEvent) -> None:
        with self._lock:
            self.rejected += 1
        log.error("%s", error)
        if self.on_error:
            try:
                self.on_error(error)
            except Exception:  # noqa: BLE001
                log.exception("tierlog: on_error failed")

    def _post(self, batch: List[Event]):
        body = json.dumps(batch, separators=(",", ":"), default=str).encode()
        headers = {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"}
        if self.compress and len(body) > 1024:
            body = gzip.compress(body, 5)
            headers["Content-Encoding"] = "gzip"
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, None, None
        except urllib.error.HTTPError as e:
            try:
                answer = json.loads(e.read() or b"null")
            except ValueError:
                answer = None
            retry_after = e.headers.get("Retry-After")
            try:
                retry_after = float(retry_after) if retry_after else None
            except ValueError:
                retry_after = None
            return e.code, answer if isinstance(answer, dict) else None, retry_after
        except (urllib.error.URLError, OSError) as e:
            log.debug("tierlog: %s", e)
            return None, None, None


"""Fan-out across replicas through one Redis stream: replicas resume where they left off."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any, NamedTuple

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError, ResponseError

from payout_gateway.domain.events import StatusChanged
from payout_gateway.events.broker import LocalFanout, Missed, SubscriberQueue

logger = logging.getLogger("payout_gateway.events")

DEFAULT_KEY_PREFIX = "payout-gateway:status:"
# Entries the stream keeps (trimmed approximately, the cheap way): the changes a replica can
# catch up on after losing Redis. At ~400 bytes an entry, 10,000 is ~4 MB in Redis.
DEFAULT_STREAM_MAX_LENGTH = 10_000
# Changes waiting to be written while Redis cannot be reached; the oldest go beyond this.
DEFAULT_BACKLOG_LIMIT = 10_000
# Publication ids remembered to drop a change written twice (a write retried after its
# answer was lost): far more than one retried batch can hold.
_RECENT_IDS = 4_096
_SEND_BATCH = 200
# How often a replica reading the stream asks whether Redis is still the same server (a
# restart hidden by the client's own reconnection drops the stream, and what it held).
_INSTANCE_CHECK_SECONDS = 1.0
# Entries read at a time by a new replica taking note of the objects' last changes.
_REMEMBER_SLICE = 500


class _Unsent(NamedTuple):
    """A change published here and not yet in the stream."""

    publication_id: str
    organization_id: str
    payload: str  # the change as JSON
    sequence: int | None


class _RedisReplaced(RedisError):
    """The Redis server answering is not the one this replica read the stream from."""


def stream_key(prefix: str) -> str:
    """The stream every replica sharing ``prefix`` writes to and reads."""
    return f"{prefix}stream"


class RedisBroker:
    """Publishing appends the change to the stream ``<prefix>stream``; every replica (this one
    too) reads the stream from where it last read and hands each change to its LocalFanout.

    Unlike pub/sub, nothing published while a replica was away from Redis is lost to it: on
    reconnecting it reads on from its last entry, as long as the stream (trimmed to about
    ``stream_max_length`` entries) still holds it; a replica that fell further behind logs how
    many it missed. ``publish`` never waits for Redis: a sender task writes changes in order,
    keeping those it could not write yet (up to ``backlog_limit``) until Redis is back. A
    change written twice (a retried write whose first answer was lost) is delivered once.

    Where changes are lost all the same, the subscriptions that missed them end (``Missed``):
    the oldest unsent changes dropped from a full backlog (their organizations' subscriptions,
    on every replica: a marker entry tells the others), the stream trimmed past a replica's
    place before it read on (it was away, or read more slowly than changes came: each read
    is counted against the stream's own count, in one transaction), the stream deleted, or a
    Redis server that restarted or was replaced (its stream gone with whatever it held).
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_KEY_PREFIX,
        stream_max_length: int = DEFAULT_STREAM_MAX_LENGTH,
        backlog_limit: int = DEFAULT_BACKLOG_LIMIT,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        block_seconds: float = 1.0,
        close_timeout_seconds: float = 5.0,
    ) -> None:
        self._client = client
        self._key = stream_key(prefix)
        self._max_length = stream_max_length
        self._backlog_limit = backlog_limit
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._block_ms = max(1, round(block_seconds * 1000))
        self._close_timeout = close_timeout_seconds
        self._local = LocalFanout()
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The last entry this replica has read ("0-0": none yet, the stream was empty).
        self._position: str | None = None
        # How many entries the stream had ever been given up to that one (None: Redis does
        # not say), to tell how many entries were trimmed away before this replica read them.
        self._ordinal: int | None = None
        self._recent: OrderedDict[str, None] = OrderedDict()
        # Changes not yet written to Redis, in publication order.
        self._backlog: deque[_Unsent] = deque()
        # Organizations whose changes were dropped unsent, not yet told to the other replicas.
        self._lost_organizations: set[str] = set()
        # The Redis server's run id when this replica placed itself in the stream.
        self._server_run_id: str | None = None
        self._instance_checked = 0.0
        self._backlog_changed = asyncio.Event()
        self._backlog_empty = asyncio.Event()
        self._backlog_empty.set()
        self._sender: asyncio.Task[None] | None = None
        self.subscriptions_made = 0
        self.dropped_unsent = 0
        # Entries trimmed from the stream before this replica read them (its subscriptions
        # were ended for them).
        self.missed_in_stream = 0
        # Told the sequences of the changes each write put in the stream (the status outbox
        # forgets them then).
        self.on_written: Callable[[list[int]], None] | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_KEY_PREFIX,
        client_name: str = "payout-gateway",
        startup_timeout: float = 10.0,
        **options: Any,
    ) -> RedisBroker:
        """Connect and wait until this replica has its place in the stream, so a replica that
        reports ready receives every change published from then on. Raises
        ``ConnectionError`` when Redis cannot be reached within ``startup_timeout``."""
        client = Redis.from_url(
            url,
            client_name=client_name,
            socket_connect_timeout=3.0,
            # Longer than a blocking read (``block_seconds``): a read that outlasts it is on a
            # half-open connection, which never errors by itself.
            socket_timeout=5.0,
            socket_keepalive=True,
            retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), 2),
        )
        broker = cls(client, prefix=prefix, **options)
        broker.start()
        if not await broker.wait_until_subscribed(startup_timeout):
            await broker.aclose()
            raise ConnectionError("Redis did not answer the status-change stream in time")
        return broker

    @property
    def key(self) -> str:
        return self._key

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="redis-status-stream")
        if self._sender is None:
            self._sender = asyncio.create_task(self._send(), name="redis-status-sender")

    async def wait_until_subscribed(self, within: float) -> bool:
        """True once this replica reads the stream (again, after a reconnect)."""
        try:
            await asyncio.wait_for(self._subscribed.wait(), within)
        except TimeoutError:
            return False
        return True

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    @property
    def subscriber_count(self) -> int:
        return self._local.subscriber_count

    @property
    def unsent(self) -> int:
        """Changes published here and not yet written to Redis."""
        return len(self._backlog)

    async def sent(self) -> None:
        """Return once every change published so far is in Redis (bound the wait with
        ``asyncio.timeout``)."""
        await self._backlog_empty.wait()

    async def publish(self, change: StatusChanged) -> None:
        # No local delivery here: this replica reads its own change back from the stream, so
        # local subscribers get it exactly once, in the same order as every other replica.
        # Nor any wait for Redis: the change is committed and audited, and a request must not
        # fail or hang on fan-out.
        if len(self._backlog) >= self._backlog_limit:
            lost_organization = self._backlog.popleft().organization_id
            self.dropped_unsent += 1
            logger.error(
                "Redis unreachable for too long: dropped the oldest unsent status change "
                "(%d dropped so far); subscribers on every replica miss it",
                self.dropped_unsent,
            )
            # Its organization's subscriptions end here now, and on the other replicas once
            # Redis takes the marker written ahead of the changes kept.
            self._lost_organizations.add(lost_organization)
            self._local.interrupt({lost_organization}, Missed.LOST_IN_FANOUT)
        self._backlog.append(
            _Unsent(
                uuid.uuid4().hex, change.organization_id, change.model_dump_json(), change.sequence
            )
        )
        self._backlog_empty.clear()
        self._backlog_changed.set()

    def subscribe(self, organization_id: str) -> AbstractAsyncContextManager[SubscriberQueue]:
        return self._local.subscription(organization_id)

    async def check(self, within: float = 2.0) -> None:
        """Ready: this replica reads the stream (else its subscribers miss changes for now)
        and Redis answers a PING within ``within`` seconds (else changes wait to be sent).
        Raises ``ConnectionError`` otherwise."""
        if not self._subscribed.is_set():
            raise ConnectionError("not reading the Redis status stream (reconnecting)")
        try:
            await asyncio.wait_for(self._client.ping(), within)
        except (RedisError, TimeoutError) as error:
            raise ConnectionError(
                f"Redis did not answer a PING ({type(error).__name__})"
            ) from error

    async def aclose(self) -> None:
        """Write what is still unsent (within ``close_timeout_seconds``), then stop."""
        sender, self._sender = self._sender, None
        if sender is not None:
            if self._backlog:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self.sent(), self._close_timeout)
            if self._backlog:
                logger.error(
                    "closing with %d status change(s) not written to Redis: subscribers on "
                    "other replicas miss them",
                    len(self._backlog),
                )
            await self._stop(sender)
        task, self._task = self._task, None
        if task is not None:
            await self._stop(task)
        await self._client.aclose()

    async def _stop(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        # Bounded: a task whose clean-up does not finish must not hang shutdown (once, in the
        # Redis outage tests, the wait here never ended, the loop idle). And ``wait``, not
        # ``await task`` under a suppress: a caller cancelled while waiting here stays
        # cancelled.
        done, _ = await asyncio.wait({task}, timeout=self._close_timeout)
        if not done:
            logger.warning("%s did not stop within %s s", task.get_name(), self._close_timeout)
        elif not task.cancelled() and task.exception() is not None:
            logger.error("%s ended with an error", task.get_name(), exc_info=task.exception())

    # sending ------------------------------------------------------------------------------

    async def _send(self) -> None:
        delay = self._backoff_initial
        failing = False
        while True:
            _stop_if_cancelled()
            if not self._backlog and not self._lost_organizations:
                self._backlog_changed.clear()
                await self._backlog_changed.wait()
                continue
            batch = list(itertools.islice(self._backlog, _SEND_BATCH))
            lost = frozenset(self._lost_organizations)
            try:
                await self._write(batch, lost)
            except (RedisError, OSError) as error:
                if not failing:
                    logger.warning(
                        "could not publish status changes to Redis (%s): kept, %d waiting; "
                        "retrying",
                        type(error).__name__,
                        len(self._backlog),
                    )
                failing = True
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, self._backoff_max)
                continue
            except Exception:  # a bug here must not end fan-out for the replica's lifetime
                logger.exception("publishing status changes to Redis failed")
                await asyncio.sleep(self._backoff_max)
                continue
            if failing:
                logger.info("status changes are reaching Redis again")
            failing, delay = False, self._backoff_initial
            self._lost_organizations -= lost
            if self.on_written is not None:
                self.on_written([u.sequence for u in batch if u.sequence is not None])
            # Written: forget them. The backlog only grows at its end meanwhile, and drops
            # from its start only when full, which may already have dropped some of these.
            for entry in batch:
                if self._backlog and self._backlog[0] is entry:
                    self._backlog.popleft()
            if not self._backlog:
                self._backlog_empty.set()

    async def _write(self, batch: list[_Unsent], lost: frozenset[str]) -> None:
        # One round trip, in order. A batch cut off midway is written again whole: its entries
        # that did arrive are then read twice and delivered once (their publication ids).
        async with self._client.pipeline(transaction=False) as pipe:
            if lost:  # ahead of the changes kept, where the dropped ones would have been
                pipe.xadd(
                    self._key,
                    {"id": uuid.uuid4().hex, "missed": json.dumps(sorted(lost))},
                    maxlen=self._max_length,
                    approximate=True,
                )
            for unsent in batch:
                pipe.xadd(
                    self._key,
                    {"id": unsent.publication_id, "change": unsent.payload},
                    maxlen=self._max_length,
                    approximate=True,
                )
            await pipe.execute()

    # reading ------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._backoff_initial
        # Failed attempts since the stream was last read: an outage is told when it starts
        # and when it ends, not at each attempt between (every few seconds, on every replica).
        failed_attempts = 0
        while True:
            _stop_if_cancelled()
            made_before = self.subscriptions_made
            try:
                await self._place()
                self.subscriptions_made += 1
                if self.subscriptions_made > 1:
                    logger.info(
                        "reading the Redis status stream again",
                        extra={"failed_attempts": failed_attempts},
                    )
                failed_attempts = 0
                self._subscribed.set()
                await self._read()
            except (RedisError, OSError) as exc:
                if not failed_attempts:
                    logger.warning("Redis status stream lost (%s)", type(exc).__name__)
                failed_attempts += 1
            except Exception:  # a bug here must not end fan-out for the replica's lifetime
                logger.exception("reading the Redis status stream failed")
            finally:
                self._subscribed.clear()
            if self.subscriptions_made > made_before:
                delay = self._backoff_initial  # it worked for a while: start over
            # Full jitter: replicas that lost Redis together do not reconnect in lockstep.
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self._backoff_max)

    async def _place(self) -> None:
        """On first connecting, start after the stream's last entry (a new replica has no
        subscribers who missed anything); on reconnecting, go on from the last entry read, and
        say how many changes it missed if the stream was trimmed past it meanwhile (ending the
        subscriptions here, which missed them). A Redis server that is not the one read before
        (restarted, or failed over) may have lost entries this replica never read: its
        subscriptions end, and it starts over as a new replica would."""
        run_id = await self._run_id()
        if self._server_run_id is not None and run_id != self._server_run_id:
            logger.error(
                "Redis is not the server this replica read the status stream from (restarted "
                "or replaced): changes it held may be lost; ending the subscriptions here"
            )
            self._local.interrupt(None, Missed.LOST_IN_FANOUT)
            self._position = self._ordinal = None
        self._server_run_id = run_id
        self._instance_checked = time.monotonic()
        try:
            info = await self._client.xinfo_stream(self._key)
        except ResponseError:  # no such key: nothing was written yet, or it was deleted
            self._stream_gone()
            return
        if self._position is None:
            self._start_at_end(info)
            await self._remember_before_place()
            return
        if not self._account(info):
            await self._remember_before_place()

    def _start_at_end(self, info: dict[str, Any]) -> None:
        """Read on from the stream's last entry, as a new replica does."""
        added = info.get("entries-added")
        self._position = _text(info["last-generated-id"])
        self._ordinal = added if isinstance(added, int) else None

    async def _remember_before_place(self) -> None:
        """A replica that starts at the stream's end never saw the changes before it: a change
        published late (its replica cut off from Redis meanwhile) would arrive after a later
        change of its object that this replica was not there for, and be shown, moving the
        object back. So it takes note of the objects' last changes in the entries before its
        place (as many as its fan-out remembers), without showing them: read newest first in
        slices, so that parsing thousands of entries does not hold the loop up at once."""
        if self._position in (None, "0-0"):
            return
        seen: list[tuple[str, str, int]] = []
        newest, done = self._position, None
        while len(seen) < self._local.remembered_objects:
            # Each slice starts at the last one's oldest entry (inclusive: Redis before 6.2
            # has no exclusive bound), which is skipped.
            entries: Any = await self._client.xrevrange(
                self._key, max=newest, min="-", count=_REMEMBER_SLICE
            )
            for entry_id, fields in entries or ():
                if _text(entry_id) != done:
                    noted = _object_sequence(_field(fields, "change"))
                    if noted is not None:
                        seen.append(noted)
            if len(entries or ()) < _REMEMBER_SLICE:
                break
            newest = done = _text(entries[-1][0])
        for object_type, object_id, sequence in reversed(seen):  # oldest first
            self._local.remember(object_type, object_id, sequence)

    def _stream_gone(self) -> None:
        """The stream is not there: never written yet, or deleted with what it held."""
        if self._position not in (None, "0-0"):
            logger.error(
                "the Redis status stream is gone (deleted): changes it held may be lost; "
                "ending the subscriptions here"
            )
            self._local.interrupt(None, Missed.LOST_IN_FANOUT)
        self._position, self._ordinal = "0-0", 0

    def _account(self, info: dict[str, Any]) -> bool:
        """Compare this replica's place with what the stream holds now (XINFO STREAM): the
        subscriptions here end if entries were trimmed away before this replica read them
        (it was away, or read more slowly than others wrote), or if the stream is another
        one (deleted and written again: this replica then reads on from its end). False in
        that last case. Every entry ever added has an ordinal (we never delete one): the
        stream holds ordinals added - length + 1 up to added, and this replica has read up
        to its own."""
        added, length = info.get("entries-added"), info.get("length")
        if not isinstance(added, int) or not isinstance(length, int) or self._ordinal is None:
            return True  # a Redis before 7.0 does not count; nothing to compare
        if added < self._ordinal:
            logger.error(
                "the Redis status stream was deleted and written again: changes it held may "
                "be lost; ending the subscriptions here"
            )
            self._local.interrupt(None, Missed.LOST_IN_FANOUT)
            self._start_at_end(info)
            return False
        missed = added - length - self._ordinal
        if missed > 0:
            logger.error(
                "the Redis status stream was trimmed past this replica's place before it read "
                "on (it was away, or read more slowly than changes came): subscribers here "
                "missed %d change(s) (raise PAYOUT_GATEWAY_REDIS_STREAM_MAX_LENGTH if this "
                "recurs)",
                missed,
            )
            self.missed_in_stream += missed
            self._local.interrupt(None, Missed.LOST_IN_FANOUT)
            self._ordinal = added - length
        return True

    async def _run_id(self) -> str | None:
        """The server's run id; None where INFO is refused (some managed Redis services
        rename it), which leaves restarts unseen there."""
        try:
            server = await self._client.info("server")
        except ResponseError:
            return None
        run_id = server.get("run_id")
        return str(run_id) if run_id is not None else None

    async def _check_instance(self) -> None:
        """While reading: raise ``_RedisReplaced`` once the server answering is not the one
        placed on (the client reconnects by itself, so a quick restart would pass unseen)."""
        now = time.monotonic()
        if now - self._instance_checked < _INSTANCE_CHECK_SECONDS:
            return
        self._instance_checked = now
        if await self._run_id() != self._server_run_id:
            raise _RedisReplaced("the Redis server was restarted or replaced")

    async def _read(self) -> None:
        while True:
            _stop_if_cancelled()
            await self._check_instance()
            assert self._position is not None
            if self._ordinal is None:  # a Redis before 7.0 does not count: nothing to check
                self._deliver(
                    await self._client.xread(
                        {self._key: self._position}, count=_SEND_BATCH, block=self._block_ms
                    )
                )
                continue
            if await self._read_counted() < _SEND_BATCH:
                # Caught up: wait for the next entry, which the next turn reads counted. (A
                # plain XREAD of what comes next cannot tell whether the stream was trimmed
                # past this replica's place meanwhile: it answers the oldest entries kept.)
                await self._client.xread({self._key: self._position}, count=1, block=self._block_ms)

    async def _read_counted(self) -> int:
        """Read on from this replica's place in one transaction with the stream's counts, so
        that entries trimmed away before this replica read them end its subscriptions instead
        of leaving a silent gap; how many entries were read."""
        assert self._position is not None
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xinfo_stream(self._key)
            pipe.xread({self._key: self._position}, count=_SEND_BATCH)
            info, answer = await pipe.execute(raise_on_error=False)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(info, ResponseError):  # no such key: not written yet, or deleted
            self._stream_gone()
            return 0
        if isinstance(info, Exception):
            raise info
        if not self._account(info):
            # Another stream: what was read came from where this replica was in the old one.
            await self._remember_before_place()
            return 0
        return self._deliver(answer)

    def _deliver(self, answer: Any) -> int:
        # RESP2 answers [[key, entries]], RESP3 {key: entries}; nothing new: empty.
        streams = answer.values() if isinstance(answer, dict) else (e for _, e in answer or ())
        read = 0
        for entries in streams:
            for entry_id, fields in entries:
                self._position = _text(entry_id)
                if self._ordinal is not None:
                    self._ordinal += 1
                self._receive(fields)
                read += 1
        return read

    def _receive(self, fields: dict[Any, Any]) -> None:
        publication_id, data = _field(fields, "id"), _field(fields, "change")
        missed = _field(fields, "missed")
        if publication_id is None or (data is None and missed is None):
            logger.warning("ignoring a malformed entry on the Redis status stream")
            return
        key = _text(publication_id)
        if key in self._recent:
            return
        self._recent[key] = None
        if len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)
        if missed is not None:
            self._receive_missed(missed)
            return
        assert data is not None
        try:
            change = StatusChanged.model_validate_json(data)
        except ValidationError:
            logger.warning("ignoring a malformed status change on the Redis status stream")
            return
        self._local.deliver(change)

    def _receive_missed(self, data: bytes | str) -> None:
        """A replica dropped changes of these organizations unsent: end their subscriptions
        here (all of them, if the marker cannot be read)."""
        try:
            organizations = json.loads(data)
        except ValueError:
            organizations = None
        if not isinstance(organizations, list) or not all(
            isinstance(o, str) for o in organizations
        ):
            logger.warning("a malformed lost-changes marker on the Redis status stream")
            organizations = None
        self._local.interrupt(organizations, Missed.LOST_IN_FANOUT)


def _stop_if_cancelled() -> None:
    """Raise CancelledError in a task asked to stop. redis-py sends each command through
    ``asyncio.wait_for``, which on Python 3.11 returns the send's result instead of raising
    when the cancellation arrives as the send completes: the task's loop would go on, and
    ``aclose`` give up waiting for it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _object_sequence(data: bytes | str | None) -> tuple[str, str, int] | None:
    """A change entry's object type, object id and sequence (None if it has none): only
    these, not a validation of the whole change, for the thousands a new replica notes."""
    try:
        change = json.loads(data) if data is not None else None
    except ValueError:
        return None
    if not isinstance(change, dict):
        return None
    object_type, object_id = change.get("object_type"), change.get("object_id")
    sequence = change.get("sequence")
    if (
        isinstance(object_type, str)
        and isinstance(object_id, str)
        and isinstance(sequence, int)
        and not isinstance(sequence, bool)
    ):
        return object_type, object_id, sequence
    return None


def _field(fields: dict[Any, Any], name: str) -> bytes | str | None:
    """An entry's field, whether the client decodes answers or not."""
    value = fields.get(name.encode(), fields.get(name))
    return value if isinstance(value, bytes | str) else None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

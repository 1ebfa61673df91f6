"""Where an addBankAccount's CPU goes, layer by layer: each layer run alone, in-process, against
the Commet sandbox in a process of its own.

The flat profiles of a served add (bench/PROFILE.md) spread its cost over hundreds of functions;
running the layers alone sizes them instead:

- ``add``: the whole add through the gateway's ASGI app (as uvicorn calls it);
- ``service``: ``PayoutService.add_bank_account`` (provider call, store writes, audit row);
- ``provider call``: the Commet adapter's call alone (``ProviderHttp`` over aiohttp);
- ``bare aiohttp POST``: the same body POSTed with a plain aiohttp session, the floor under it;
- ``HTTP and GraphQL``: the ASGI app over a service that answers at once, i.e. everything
  around the resolver's call into the service;
- ``HTTP and GraphQL floor``: the same request answered by a path written by hand for this one
  document over the same instant service: the body parsed, the key authenticated, the
  variables coerced by graphql-core, the input built and validated, the answer completed and
  encoded as the app answers it. No error handling, no other document: not a gateway, but
  the least the layers above can cost for this request, i.e. what compiling a document's
  execution once could at most take off ``HTTP and GraphQL`` (bench/PROFILE.md, thirteenth
  round).

Each kind runs ``--operations`` times from ``--callers`` concurrent callers after a warm-up.
CPU per operation is this process's (all threads). ``--counter callgrind`` runs the same under
valgrind and counts instructions per operation instead (minutes, but the same on any machine
and under any load): the counters are zeroed before and dumped after each kind, and the count
of an empty kind (an ``asyncio.sleep(0)`` per operation) is subtracted, so the counts exclude
the control calls' own cost. Instructions add up across layers where CPU need not: a whole add
has cost about a third more CPU than its layers run alone (bench/PROFILE.md, twelfth round).

    .venv/bin/python -m bench.layers --rounds 3
    .venv/bin/python -m bench.layers --counter callgrind --operations 320
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from bench.stack import COMMET_KEY, ROOT, provider_sandbox

TOTALS = re.compile(r"^totals:\s+(\d+)", re.MULTILINE)
EMPTY = "nothing (subtracted)"
Operation = Callable[[], Awaitable[None]]


async def _operations(
    base_url: str, workdir: str, closing: contextlib.AsyncExitStack
) -> dict[str, Operation]:
    """The kinds, each one operation; what they open is closed by ``closing``."""
    import aiohttp
    import orjson

    from bench.graphql_layer import InstantAddService, add_body, gateway_settings, post, seed
    from bench.run import VERIFY
    from payout_gateway.domain.models import AddBankAccountRequest
    from payout_gateway.providers.commet import transformers
    from payout_gateway.web import create_app

    database_url = f"sqlite:///{workdir}/gateway.db"
    api_key = await seed(database_url, commet_api_key=COMMET_KEY)
    settings = gateway_settings(database_url, commet_base_url=base_url)
    app = create_app(settings)
    instant_app = create_app(settings)
    for started in (app, instant_app):
        await closing.enter_async_context(started.router.lifespan_context(started))
    verified = await post(app, api_key, json.dumps({"query": VERIFY}).encode())
    if b"CompletePayoutVerificationSuccess" not in verified:
        raise RuntimeError(f"verification failed: {verified[:300]!r}")
    gateway = app.state.gateway
    instant = instant_app.state.gateway
    instant_app.state.gateway = dataclasses.replace(
        instant,
        service=InstantAddService(instant.store, instant.providers, pipeline=instant.pipeline),
    )
    org = await gateway.tenancy.authenticate(api_key)
    assert org is not None
    adapter = gateway.service.provider_for(org)
    # Account numbers start from the process id: they never repeat across runs on one sandbox.
    sequence = iter(range(os.getpid() * 1_000_000, 10**15))
    session = await closing.enter_async_context(aiohttp.ClientSession())
    url = f"{base_url}/payouts/bank-accounts"

    def request() -> AddBankAccountRequest:
        """What the add's resolver hands the service for ``add_body``'s input."""
        bank = {
            "account_number": f"1{next(sequence):010d}",
            "holder_name": "Bench Holder",
            "routing_number": "021000021",
        }
        return AddBankAccountRequest.model_validate({"bank": bank})

    async def add(target: Any = app) -> None:
        answer = await post(target, api_key, add_body(next(sequence)))
        if b"AddBankAccountSuccess" not in answer:
            raise RuntimeError(f"unexpected answer: {answer[:300]!r}")

    async def service() -> None:
        await gateway.service.add_bank_account(org, request())

    async def provider_call() -> None:
        await adapter.add_bank_account(org.provider_context(), request())

    async def bare_post() -> None:
        body = orjson.dumps(transformers.add_bank_account_body(request()).to_json())
        headers = {
            "x-api-key": COMMET_KEY,
            "idempotency-key": f"bench-{next(sequence)}",
            "content-type": "application/json",
        }
        async with session.post(url, data=body, headers=headers) as answer:
            await answer.read()
            if answer.status >= 300:
                raise RuntimeError(f"unexpected status {answer.status}")

    floor = _floor(instant_app, api_key)

    async def floor_add() -> None:
        answer = await post(floor, api_key, add_body(next(sequence)))
        if b"AddBankAccountSuccess" not in answer:
            raise RuntimeError(f"unexpected answer: {answer[:300]!r}")

    async def nothing() -> None:
        await asyncio.sleep(0)

    kinds: dict[str, Operation] = {
        EMPTY: nothing,
        "add": add,
        "service": service,
        "provider call": provider_call,
        "bare aiohttp POST": bare_post,
        "HTTP and GraphQL": lambda: add(instant_app),
        "HTTP and GraphQL floor": floor_add,
    }
    return kinds


def _floor(app: Any, api_key: str) -> Any:
    """The ``HTTP and GraphQL floor`` kind's ASGI app: ``bench.run.ADD`` alone, by hand, over
    ``app``'s gateway (see the module's docstring)."""
    import orjson
    from graphql import OperationDefinitionNode, parse
    from graphql.execution.values import get_variable_values
    from strawberry.relay import GlobalID

    from bench.run import ADD
    from payout_gateway.graphql.input_conversion import _Compiler
    from payout_gateway.graphql.inputs import AddBankAccountInput
    from payout_gateway.graphql.schema import build_schema
    from payout_gateway.web.graphql_router import bearer_credential

    gateway = app.state.gateway
    schema = build_schema()
    graphql_schema = schema._schema
    operation = parse(ADD).definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    compiled = _Compiler(schema.config, schema.schema_converter.scalar_registry).input_object(
        AddBankAccountInput
    )
    headers = [(b"content-type", b"application/json")]

    async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = (await receive())["body"]
        request = orjson.loads(body)
        if request["query"] != ADD:
            raise RuntimeError("the floor answers bench.run.ADD only")
        authorization = dict(scope["headers"])[b"authorization"].decode()
        org = await gateway.tenancy.authenticate(bearer_credential(authorization))
        variables = get_variable_values(
            graphql_schema, operation.variable_definitions or (), request["variables"]
        )
        if isinstance(variables, list):
            raise RuntimeError(f"variables refused: {variables}")
        add_input = compiled(variables.coerced["input"])
        assert isinstance(add_input, AddBankAccountInput)
        account = await gateway.service.add_bank_account(org, add_input.to_domain())
        data = {
            "addBankAccount": {
                "__typename": "AddBankAccountSuccess",
                "bankAccount": {
                    "id": str(GlobalID(type_name="BankAccount", node_id=account.id)),
                    "last4": account.last4,
                },
            }
        }
        content = orjson.dumps({"data": data})
        length = (b"content-length", str(len(content)).encode())
        await send({"type": "http.response.start", "status": 200, "headers": [*headers, length]})
        await send({"type": "http.response.body", "body": content})

    return answer


async def child(base_url: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Runs in the measured process: per kind, CPU µs (or, under callgrind, dumps) per round."""
    from payout_gateway.web.gc_tuning import tune_cycle_collector

    per_caller = args.operations // args.callers
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        async with contextlib.AsyncExitStack() as closing:
            kinds = await _operations(base_url, workdir, closing)
            for round_ in range(args.rounds):
                for index, (name, operation) in enumerate(kinds.items()):

                    async def caller(count: int, operation: Operation = operation) -> None:
                        for _ in range(count):
                            await operation()

                    await asyncio.gather(*(caller(args.warm_up) for _ in range(args.callers)))
                    tune_cycle_collector()  # as a serving process does once it has started
                    if args.counter == "callgrind":
                        _callgrind("--zero")
                    started = time.process_time()
                    await asyncio.gather(*(caller(per_caller) for _ in range(args.callers)))
                    cpu = time.process_time() - started
                    if args.counter == "callgrind":
                        _callgrind(f"--dump=kind{index}round{round_}")
                    results.setdefault(name, []).append(cpu / (per_caller * args.callers) * 1e6)
    return results


def _callgrind(option: str) -> None:
    # Blocking on purpose: nothing may run between a reset or a dump and the operations.
    subprocess.run(["callgrind_control", str(os.getpid()), option], check=True, capture_output=True)


def _instructions(out: Path, names: list[str], operations: int) -> dict[str, list[float]]:
    """Per kind (``names`` in the child's order), instructions per operation in each round, the
    empty kind's count subtracted."""
    counts: dict[str, list[int]] = {}
    for dump in sorted(out.parent.glob(f"{out.name}.*"), key=lambda p: int(p.suffix[1:])):
        text = dump.read_text()
        trigger = re.search(r"^desc: Trigger: .*kind(\d+)round\d+", text, re.MULTILINE)
        total = TOTALS.search(text)
        if trigger and total:
            counts.setdefault(names[int(trigger.group(1))], []).append(int(total.group(1)))
    empty = counts.pop(EMPTY)
    return {
        name: [(count - base) / operations for count, base in zip(rounds, empty, strict=True)]
        for name, rounds in counts.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--operations", type=int, default=3200, help="per kind and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm-up", type=int, default=5, help="operations per caller first")
    parser.add_argument("--counter", choices=["cpu", "callgrind"], default="cpu")
    parser.add_argument("--child", metavar="BASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.operations % args.callers:
        parser.error("--operations must be a multiple of --callers")
    if args.child:
        import uvloop

        results = uvloop.run(child(args.child, args))
        print("RESULTS " + json.dumps(results), flush=True)
        return 0
    if args.counter == "callgrind" and shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    with (
        tempfile.TemporaryDirectory(prefix="payout-layers-") as workdir,
        provider_sandbox("commet", Path(workdir)) as base_url,
    ):
        out = Path(workdir) / "callgrind.out"
        measured = [
            sys.executable,
            *("-m", "bench.layers", "--child", base_url),
            *(f"--callers={args.callers}", f"--operations={args.operations}"),
            *(f"--rounds={args.rounds}", f"--warm-up={args.warm_up}"),
            f"--counter={args.counter}",
        ]
        if args.counter == "callgrind":
            valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
            measured = [*valgrind, *measured]
        finished = subprocess.run(measured, cwd=ROOT, capture_output=True, text=True)
        line = next(
            (row for row in finished.stdout.splitlines() if row.startswith("RESULTS ")), None
        )
        if finished.returncode != 0 or line is None:
            sys.stderr.write(finished.stdout[-3000:] + finished.stderr[-3000:])
            return 1
        cpu = cast(dict[str, list[float]], json.loads(line.removeprefix("RESULTS ")))
        counted = (
            _instructions(out, list(cpu), args.operations) if args.counter == "callgrind" else None
        )
    print(
        f"addBankAccount layer by layer, Commet, {args.callers} callers, {args.operations} "
        f"operations per kind and round, medians of {args.rounds} round(s)"
    )
    print("| kind | CPU µs per operation | rounds |" + (" instructions |" if counted else ""))
    print("|---|---:|---|" + ("---:|" if counted else ""))
    for name, rounds in cpu.items():
        if name == EMPTY:
            continue
        each = ", ".join(f"{r:.0f}" for r in rounds)
        row = f"| {name} | {statistics.median(rounds):,.0f} | {each} |"
        if counted:
            row += f" {statistics.median(counted[name]) / 1e6:.3f} M |"
        print(row)
    if counted:
        print("(CPU under callgrind is its own, tens of times the real; compare instructions.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Picks the broker from settings: in-process for one replica, Redis for several."""

from __future__ import annotations

from payout_gateway.events.broker import EventBroker, InProcessBroker
from payout_gateway.events.redis_broker import RedisBroker
from payout_gateway.settings import Settings


async def build_broker(settings: Settings) -> EventBroker:
    if settings.redis_url is None:
        return InProcessBroker()
    return await RedisBroker.connect(
        settings.redis_url,
        prefix=settings.redis_channel_prefix,
        stream_max_length=settings.redis_stream_max_length,
    )

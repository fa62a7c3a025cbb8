"""The bus port and its adapters (RabbitMQ; embedded on SQLite; in-memory); ``open_bus`` picks one."""

from __future__ import annotations

from shared.bus.base import Bus, BusUnavailable, Consumer, Handler, QueueSpec, Reject, Retry
from shared.config import BusKind, Settings

__all__ = ["Bus", "BusUnavailable", "Consumer", "Handler", "QueueSpec", "Reject", "Retry", "open_bus"]


def open_bus(settings: Settings, *, name: str = "lhcie") -> Bus:
    if settings.bus is BusKind.AMQP:
        from shared.bus.amqp import AmqpBus

        return AmqpBus(
            settings.amqp_url.get_secret_value(), connection_name=name, delivery_limit=settings.amqp_delivery_limit
        )
    if settings.bus is BusKind.SQLITE:
        from shared.bus.sqlite import FILE_NAME, SqliteBus

        return SqliteBus(settings.data_dir / FILE_NAME, delivery_limit=settings.amqp_delivery_limit)
    from shared.bus.memory import MemoryBus

    return MemoryBus(delivery_limit=settings.amqp_delivery_limit)

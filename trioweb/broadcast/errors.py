"""Errors of the broadcast hub."""


class BrokerUnavailable(RuntimeError):
    """The broker could not be reached when the hub started; the message names its URL."""

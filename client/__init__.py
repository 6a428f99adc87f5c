"""For analysts: the HTTP API as pandas DataFrames, the Parquet history offline, and pictures.

::

    from netwarden.client import Client
    nw = Client("http://127.0.0.1:8080", token=open("netwarden-data/admin.token").read())
    nw.anomalies(state="open")

:class:`Client` pages through every list for you and turns an error of the API (an RFC 9457
problem) into a :class:`ClientError` with its status and detail; :func:`read_history` reads the
window history a service wrote (``<data_dir>/history``) without the service;
:mod:`netwarden.client.plots` draws scores, explanations and service graphs (matplotlib, Agg).
"""

from __future__ import annotations

from netwarden.client.errors import ClientError
from netwarden.client.history import read_history, read_history_flows
from netwarden.client.http import Client

__all__ = ["Client", "ClientError", "read_history", "read_history_flows"]

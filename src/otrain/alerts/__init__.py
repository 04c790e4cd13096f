"""Survey alert packets in: ZTF Avro (any schema version, broker rewrites), broker parquet
exports, and Rubin alerts (lsst-alert-packet schemas, Avro container or Confluent wire format).

Each alert becomes one cutout of the requested ``channels`` (``diff`` = cutoutDifference,
``sci`` = cutoutScience, ``ref`` = cutoutTemplate), stacked ``(C, H, W)`` float32, and one table
row (columns as in docs/DEVELOPING.md, plus ``objectId``, ``isdiffpos``, ``rb``, ``drb``, ``jd``,
``programid``, ``n_nan``).

Policies (each counted in an :class:`AlertReport`, none of them a crash):

- Stamp size: a window of ``cutout_size`` pixels (default 63) centred on the candidate. Larger
  stamps are centre-cropped. Stamps smaller than the window (ZTF stamps cut by a CCD edge: 12 of
  the 1,485 shared alerts) are padded with NaN on the side the edge cut off, told from the
  candidate's ``xpos``/``ypos``, so the candidate stays at the centre: ``n_bad_size``;
  ``edge`` is true for them.
- NaN pixels (off the CCD, masked) are kept as NaN (the normaliser turns them into 0); the
  column ``n_nan`` counts them per alert (padding not included), ``edge`` is true, and the
  report counts the alerts in ``n_with_nan``.
- A missing (null or empty) requested stamp: the alert is skipped, ``n_missing_stamp``.
- A corrupt record, an undecodable stamp, an unreadable file: skipped, ``n_unreadable``, with a
  ``"file: problem"`` line; ``strict=True`` raises :class:`~otrain.errors.OtrainError` naming
  the file instead.
- Missing numbers are NaN, missing strings ``""``; ``programid`` is -1 when unknown.
- ``candid`` is text; ``label`` is -1 (unknown) unless a :class:`LabelRule` is given.
- ``file`` is the alert file, ``source_file`` is ``file#record`` (record position from 0).

Optional packages: pyarrow (parquet files), lsst-alert-packet (schemas of Confluent
wire-format Rubin messages). Avro container files, including Rubin ones, need neither.
"""

from otrain.alerts.fields import CHANNEL_FIELDS, COLUMNS
from otrain.alerts.labels import LabelRule, read_label_csv
from otrain.alerts.reading import (
    STAMP_POLICY,
    check_channels,
    iter_alert_batches,
    read_alerts,
)
from otrain.alerts.report import AlertReport
from otrain.alerts.sources import find_alert_files, iter_alerts
from otrain.alerts.stamps import decode_stamp

__all__ = [
    "CHANNEL_FIELDS",
    "COLUMNS",
    "STAMP_POLICY",
    "AlertReport",
    "LabelRule",
    "check_channels",
    "decode_stamp",
    "find_alert_files",
    "iter_alert_batches",
    "iter_alerts",
    "read_alerts",
    "read_label_csv",
]

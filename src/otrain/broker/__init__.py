"""Models out to alert brokers: an ONNX graph that takes raw stamps and gives P(real)
(:mod:`~otrain.broker.onnx_export`, needs ``otrain[onnx]``), and a scoring API for a broker's
stream step (:mod:`~otrain.broker.stream`: alert dicts or numpy stamps in, P(real) and spread out,
in input order, the model loaded once, nothing else read or written).
"""

from otrain.broker.stream import load_model, score_alerts, score_stamps

__all__ = ["load_model", "score_alerts", "score_stamps"]

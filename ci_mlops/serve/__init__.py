"""The prediction service: one verified ONNX model over the Open Inference Protocol v2
(REST), and the pre-deploy check that runs it on a candidate before a deploy publishes.

``app`` speaks the protocol, ``server`` runs the process, ``check`` is the pre-deploy
check. Everything heavy (onnxruntime, numpy, Starlette, uvicorn) is imported inside.
"""

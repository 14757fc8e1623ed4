"""The payoff matrix of the spec's §1.4 worked example (LLM, user) per cell, shared by the games tests."""

CELLS = {
    "DQ_AQ": (4.1, 3.5),
    "DQ_CQ": (3.6, 2.0),
    "DQ_DA": (2.8, 4.1),
    "VQ_AQ": (3.0, 2.8),
    "VQ_CQ": (1.0, 1.3),
    "VQ_DA": (1.0, 1.0),
}

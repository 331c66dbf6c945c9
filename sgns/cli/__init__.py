"""The command-line tools, on top of everything else (nothing in the library imports them): sgns-train
(train.py), sgns-eval (eval.py), sgns-export (export.py), sgns-summarize (summarize.py), and their shared
helpers (common.py)."""

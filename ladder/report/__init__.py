"""The report layer: what people read, made from fitted objects (as scikit-learn's displays are made
from an estimator). `ladder.fit` computes and never imports this package; this package takes what
it computed and writes CSV tables, PNG plots and report.md, or prints them.

Modules, one output concept each:
- tables: the readable predictions and pipe tables (no matplotlib);
- plots: figures of a fit (step 1, step 2, predicted vs actual) and training curves;
- folder: an output folder, refused when it holds results already and written all at once;
- fit: a `LadderFit`'s folder (`write_fit_report`) and its report.md text (`fit_markdown`);
- backtest: the backtest's printed statistics (`format_backtest`);
- demo: the demo's report.md and loss_curves.png (`write_demo_report`);
- cli: the `ladder fit`, `predict` and `backtest` commands.

Nothing is imported here, so that a command needing tables alone never imports matplotlib: import
from the modules, e.g. `from ladder.report.fit import write_fit_report`. Never imports torch.
"""

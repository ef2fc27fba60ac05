"""Planning diagnostics: how planners fare on the learned energy against the true one.

* `ami.diagnostics.landscape`: energy landscapes along planner paths (1-D and 2-D slices
  through a plan), learned-vs-true energy and gradient comparisons, and the guard against
  unhealthy true gradients;
* `ami.diagnostics.report`: `ami plan`'s report, every planner on the learned and the true energy;
* `ami.diagnostics.output`: its table and JSON files;
* `ami.diagnostics.plots`: its figures (matplotlib, the optional `plot` extra, imported lazily);
* `ami.diagnostics.lq`: linear-quadratic problems with closed-form optima (planner convergence);
* `ami.diagnostics.compounding`: latent prediction error of learned rollouts against the
  encoded true future, by horizon (`benchmarks/compounding.py`).

Nothing is imported here: importing one module loads neither the others nor matplotlib.
"""

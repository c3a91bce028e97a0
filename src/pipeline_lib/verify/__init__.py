"""Verification: is the forgotten class really gone, or only hidden?

Four checks, each run on the original, every unlearned run and the retrain reference (a model that never
saw the class is the bar; zero is not): a linear probe on the frozen encoder (`probe`), a worst case over
holes (`sweep`), a relearning attack (`relearn`) and membership inference (`membership`); `verdict` reads
them together. Each module works on any `I2IModel`; `stages.verify` wires them to files, `params.verify` reads their settings.
"""

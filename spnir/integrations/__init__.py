"""SPN in trainers other than spnir's own: :mod:`spnir.integrations.lightning` (a PyTorch Lightning callback) and
:mod:`spnir.integrations.basicsr` (model classes for BasicSR and NAFNet's fork). Each module imports its trainer
only when it is imported; ``docs/integrations.md`` says what each needs."""

"""What training leaves behind, and reading it back: the run directory (`directory`), a sweep's
rungs' states (`sweep_state`), run directories -> results table (`collect`) and the OLMo
ladder's exported runs -> results table (`olmo_import`). No module here imports torch."""

"""Floor 4: an experiment file (`config.py`) and its fixed sequence of steps from raw data to the report
(`steps.py`: data -> filter -> synthesis -> mix -> train -> evaluate -> report, cached by hashes; `report.py`).
It calls the floors below; nothing calls it. Command: `loongrl reproduce EXPERIMENT` (docs/reproduce.md)."""

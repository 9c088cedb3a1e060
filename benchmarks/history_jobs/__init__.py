"""The jobs `history` is asked about in the state-store benchmark: job_0 ... job_99, never run here."""

from jobhost import every, job


def _nothing() -> None:
    """Never called: the benchmark only reads history."""


for _number in range(100):
    job(every(1).hours, name=f"job_{_number}")(_nothing)

"""Hardware cost of a model: parameters, FLOPs/MACs, latency, throughput, peak memory, energy and CO2.

Each figure is a `Measurement` that carries its unit and whether it was measured or estimated.
`measure_hardware` gathers them all for one model; `energy_meter` meters any block of work (for example a
training epoch).
"""

from nasloop.hardware.carbon import DEFAULT_GRID_G_PER_KWH, co2_grams, co2_measurement
from nasloop.hardware.counting import count_flops, count_parameters
from nasloop.hardware.energy import DEFAULT_POWER_WATTS, EnergyReading, energy_meter
from nasloop.hardware.measurement import Measurement
from nasloop.hardware.memory import peak_memory_bytes
from nasloop.hardware.report import HardwareReport, latency_metric_name, measure_hardware
from nasloop.hardware.timing import LatencyStats, cpu_threads, measure_latency

__all__ = [
    "DEFAULT_GRID_G_PER_KWH",
    "DEFAULT_POWER_WATTS",
    "EnergyReading",
    "HardwareReport",
    "LatencyStats",
    "Measurement",
    "co2_grams",
    "co2_measurement",
    "count_flops",
    "count_parameters",
    "cpu_threads",
    "energy_meter",
    "latency_metric_name",
    "measure_hardware",
    "measure_latency",
    "peak_memory_bytes",
]

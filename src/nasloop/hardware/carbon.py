"""CO2 from energy: grams = kWh × grid carbon intensity (g CO2-equivalent per kWh).

The default intensity is a world average for electricity generation: 480 g/kWh, the 2023 global figure of
Ember's *Global Electricity Review 2024*. Pass the figure of your own grid (it ranges from ~20 g/kWh for
hydro/nuclear grids to ~700+ g/kWh for coal-heavy ones). A CO2 figure is always an estimate, even when the
energy was measured, because the intensity is an assumption.

For a fuller accounting (regional intensities, PUE), codecarbon's `OfflineEmissionsTracker` could wrap a
run; nasloop does not depend on it.
"""

from __future__ import annotations

from nasloop.hardware.measurement import Measurement

DEFAULT_GRID_G_PER_KWH = 480.0
JOULES_PER_KWH = 3.6e6


def co2_grams(energy_j: float, grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH) -> float:
    """Grams of CO2-equivalent emitted by `energy_j` joules drawn from a grid of the given intensity."""
    if energy_j < 0 or grid_g_per_kwh < 0:
        raise ValueError(f"energy and intensity must be >= 0, got {energy_j} J and {grid_g_per_kwh} g/kWh")
    return energy_j / JOULES_PER_KWH * grid_g_per_kwh


def co2_measurement(energy: Measurement, grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH) -> Measurement:
    """The CO2 of an energy `Measurement`, estimated, with the energy's own method in the detail."""
    if energy.unit != "J":
        raise ValueError(f"expected an energy in J, got {energy.unit}")
    return Measurement(
        co2_grams(energy.value, grid_g_per_kwh),
        "g",
        "estimated",
        f"energy ({energy.method}) × grid intensity {grid_g_per_kwh:g} g/kWh",
    )

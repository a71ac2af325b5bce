"""The colocation benchmark's summary rows and its plot (p99 and BE share over time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def summary_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per policy: EMU, violations, noisy windows, worst quiet p99, BE share."""
    rows = []
    for name, policy in doc["policies"].items():
        reps = policy["repetitions"]
        worst = [r["p99_max_ms"] for r in reps if r["p99_max_ms"] is not None]
        rows.append(
            {
                "policy": name,
                "emu": policy["emu"],
                "slo_violations": policy["slo_violations"],
                "violations_be_idle": policy.get("violations_be_idle", 0),
                "noisy_windows": policy["noisy_windows"],
                "windows": reps[0]["windows"] if reps else 0,
                "p99_max_ms": max(worst) if worst else None,
                "be_share": sorted(r["be_share"] for r in reps)[(len(reps) - 1) // 2],
                "gen_cpu": sorted(r["gen_cpu"] for r in reps)[(len(reps) - 1) // 2],
                "emu_runs": [r["emu"] for r in reps],
            }
        )
    return rows


def plot(doc: dict[str, Any], path: Path) -> Path:
    """A PNG with one panel per policy: p99 (log scale, SLO line, noisy windows marked)
    and the BE CPU share on a second axis, over the load pattern."""
    import matplotlib  # noqa: PLC0415 - heavy; only the benchmark needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    policies = doc["policies"]
    target = doc["config"]["slo"]["target_ms"]
    cpus = doc["host"]["cpus"]
    fig, axes = plt.subplots(
        len(policies), 1, figsize=(10, 2.6 * len(policies)), sharex=True, squeeze=False
    )
    for ax, (name, policy) in zip(axes[:, 0], policies.items(), strict=True):
        windows = policy["windows"]
        t = [w["t"] for w in windows]
        p99 = [w["p99_ms"] if w["p99_ms"] is not None else float("nan") for w in windows]
        ax.plot(t, p99, color="tab:red", label="LC p99 (ms)")
        noisy = [(w["t"], w["p99_ms"]) for w in windows if w["noisy"] and w["p99_ms"]]
        if noisy:
            ax.scatter(*zip(*noisy, strict=True), color="black", marker="x", label="noisy window")
        ax.axhline(target, color="tab:red", linestyle="--", linewidth=0.8, label="SLO")
        ax.set_yscale("log")
        ax.set_ylabel("p99 ms")
        ax.set_title(
            f"{name}: EMU {policy['emu']:.2f}, {policy['slo_violations']} SLO violations, "
            f"{policy['noisy_windows']} noisy"
        )
        share = ax.twinx()
        share.plot(t, [w["be_cpu"] / cpus for w in windows], color="tab:blue", label="BE share")
        share.plot(
            t,
            [w["rate"] / doc["peak_rps"] for w in windows],
            color="tab:gray",
            linestyle=":",
            label="LC load / peak",
        )
        share.set_ylim(0, 1.05)
        share.set_ylabel("share")
        lines = ax.get_legend_handles_labels()
        lines2 = share.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=7)
    axes[-1, 0].set_xlabel("seconds into the load pattern")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

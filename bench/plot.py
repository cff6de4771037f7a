"""Renders the gateway benchmark (target/bench/gateway.json) as a PNG: Envoy CPU per request by
scenario, with the baseline and the physical limit (baseline + one native P-256 verification).

Usage: plot.py <gateway.json> <out.png>
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, out: str) -> None:
    with open(src) as f:
        report = json.load(f)
    rows = report["scenarios"]
    names = [r["name"] for r in rows]
    cpu = [r["cpu_us_per_request"] for r in rows]
    colours = ["#888888" if ("baseline" in n or "jwt_authn" in n) else "#2a6fbb" for n in names]
    fig, ax = plt.subplots(figsize=(10, 5))
    bars = ax.barh(names[::-1], cpu[::-1], color=colours[::-1])
    for bar, value in zip(bars, cpu[::-1]):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.1f} µs ({1e6 / value:,.0f}/s)",
                va="center", fontsize=8)
    base = next((r["cpu_us_per_request"] for r in rows if r["name"] == "1-baseline"), None)
    verify = report.get("native_p256_verify_us")
    if base is not None and verify is not None:
        ax.axvline(base + verify, color="#c0392b", linestyle="--", linewidth=1)
        # Above the top bar, in a band kept free for it, so it never covers a bar's label.
        ax.text(base + verify, len(rows) - 0.45, " limit for DPoP: baseline + native P-256 verify",
                color="#c0392b", fontsize=8, va="bottom")
        ax.set_ylim(-0.6, len(rows) + 0.2)
    ax.set_xlabel("Envoy CPU time per request (µs, lower is better); capacity per core in brackets")
    ax.set_title("keybound in Envoy 1.40, one worker: cost per request by scenario")
    ax.set_xlim(0, max(cpu) * 1.35)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

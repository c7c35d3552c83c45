#!/usr/bin/python3
"""How much does the caption's direction word help an *ideal* denoiser on the quickstart dataset?

The quickstart's moving-squares clips (16x16, 4 frames, 5-pixel square, speed 2-3 px/frame, red only) form a small
finite set per direction, so the exact posterior mean E[x0 | x_t] is a softmax-weighted average over every possible
clip. For each noise level sigma (x_t = (1 - sigma) x0 + sigma eps, latents normalised with the dataset's
latents_mean/std) this prints the ideal x0 mean-squared error when the direction is known and when it is not, and the
gap in flow-matching (v) loss units. It shows where in the noise range the direction word can matter at all.

Needs only numpy (Debian's python3-numpy): /usr/bin/python3 scripts/direction_gap_bayes.py   (about a minute)
"""
import numpy as np

S, T, K = 16, 4, 5
BG = np.array([-0.5, -0.5, -0.5])
RED = np.array([1.0, -1.0, -1.0])
MEAN = np.array([-0.45117188, -0.45117188, -0.5])  # the quickstart dataset's vae/config.json
STD = np.array([0.34595683, 0.34595683, 0.27063295])
DIRECTIONS = [(-1, 0), (1, 0), (0, -1), (0, 1)]


def clips(direction):
    """Every clip the dataset can draw for one direction (start x, start y, speed), normalised and flattened."""
    dx, dy = direction
    room, steps = S - K, T - 1
    fastest = min(room // steps if dx else 99, room // steps if dy else 99)
    out = []
    for speed in range((fastest + 1) // 2, fastest + 1):
        travel = speed * steps

        def starts(d):
            return range(0, room - travel + 1) if d > 0 else (range(travel, room + 1) if d < 0 else range(0, room + 1))

        for x0 in starts(dx):
            for y0 in starts(dy):
                v = np.tile(BG[:, None, None, None], (1, T, S, S))
                for f in range(T):
                    x, y = x0 + dx * speed * f, y0 + dy * speed * f
                    v[:, f, y:y + K, x:x + K] = RED[:, None, None]
                out.append(((v - MEAN[:, None, None, None]) / STD[:, None, None, None]).ravel())
    return np.array(out)


def posterior_mean(xt, sigma, candidates, log_prior):
    d2 = ((xt[None] - (1 - sigma) * candidates) ** 2).sum(1)
    lw = log_prior - d2 / (2 * sigma ** 2)
    p = np.exp(lw - lw.max())
    return (p / p.sum()) @ candidates


def main():
    per_dir = [clips(d) for d in DIRECTIONS]
    log_prior = [np.full(len(c), -np.log(len(c))) for c in per_dir]
    everything = np.concatenate(per_dir)
    log_prior_all = np.concatenate([lp - np.log(len(DIRECTIONS)) for lp in log_prior])
    rng = np.random.default_rng(0)
    print("| sigma | ideal x0 MSE, direction known | direction unknown | v-loss gap |")
    print("|---|---|---|---|")
    for sigma in [0.99, 0.97, 0.95, 0.93, 0.9, 0.85, 0.8, 0.5]:
        known, unknown = [], []
        for _ in range(200):
            di = rng.integers(len(DIRECTIONS))
            x0 = per_dir[di][rng.integers(len(per_dir[di]))]
            xt = (1 - sigma) * x0 + sigma * rng.standard_normal(x0.shape)
            known.append(((posterior_mean(xt, sigma, per_dir[di], log_prior[di]) - x0) ** 2).mean())
            unknown.append(((posterior_mean(xt, sigma, everything, log_prior_all) - x0) ** 2).mean())
        gap = (np.mean(unknown) - np.mean(known)) / sigma ** 2  # v = eps - x0, so a v error is an x0 error / sigma
        print(f"| {sigma} | {np.mean(known):.4f} | {np.mean(unknown):.4f} | {gap:.4f} |")


if __name__ == "__main__":
    main()

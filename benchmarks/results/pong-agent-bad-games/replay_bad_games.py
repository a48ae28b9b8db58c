"""Replay `ppo1 evaluate --episodes E --seed S [--deterministic]` (paper protocol) game for game, and
say how the points were lost.

The same VecEnv and ActionPicker as ppo1.evaluate give the same games (checked: the scores and lengths
match the evaluation's JSON). A twin ale-py vector env, colour 210x160, same seeds, fed the same actions,
gives the colour frames. Per step it logs the agent's paddle (its top and bottom row), the ball, the
action and the reward; for every lost point: whether the paddle was parked against the top wall
(top row <= 36) when the ball passed, whether the ball took the same path as at the previous lost point,
and each game's longest run of lost points. The frames of games scoring below --keep go to <out>.pkl.

    python replay_bad_games.py --episodes 6 --seed 0 --out six
"""

import argparse
import collections
import pickle
import zlib

import ale_py
import numpy as np
import torch
from ale_py.vector_env import AutoresetMode

from ppo1.agent import ActionPicker, load_agent
from ppo1.envs import VecEnv
from ppo1.envspec import FRAME_SKIP, MAX_FRAMES, parse_env_name

GREEN, WHITE = np.array([92, 186, 92]), np.array([236, 236, 236])  # the agent's paddle, the ball
TOP_WALL = 36  # paddle top row at most this: pressed against the top wall, partly hidden under it


def features(fr: np.ndarray) -> np.ndarray:
    """(n, 210, 160, 3) frames -> (n, 4): paddle top, paddle bottom, ball y, ball x (-1: not shown)."""
    paddle = np.all(fr[:, 34:194, 140:144] == GREEN, axis=-1).any(-1)
    ball = np.all(fr[:, 34:194] == WHITE, axis=-1)
    out = np.full((len(fr), 4), -1, dtype=np.int16)
    for i in range(len(fr)):
        rows = np.flatnonzero(paddle[i])
        if len(rows):
            out[i, :2] = rows[0] + 34, rows[-1] + 34
        yx = np.argwhere(ball[i])
        if len(yx):
            out[i, 2:] = yx.mean(0).round() + [34, 0]
    return out


def play(a: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    agent = load_agent(checkpoint=a.checkpoint)
    spec = parse_env_name(agent.cfg.env_name)
    n = min(a.episodes, 16)
    kw = dict(frame_stack=agent.cfg.frame_stacking, episode_life=False, clip_rewards=False, noop_max=30)
    env = VecEnv(spec, n, seed=a.seed, threads=0, sticky=0.0, **kw)
    twin = ale_py.AtariVectorEnv(
        spec.game, n, num_threads=2, repeat_action_probability=0.0, max_num_frames_per_episode=MAX_FRAMES,
        autoreset_mode=AutoresetMode.SAME_STEP, img_height=210, img_width=160, grayscale=False,
        stack_num=1, frameskip=FRAME_SKIP, noop_max=30, episodic_life=False, reward_clipping=False,
        use_fire_reset=True,
    )  # fmt: skip
    agent.policy.eval()
    pick = ActionPicker(agent.policy, a.deterministic, a.seed, "cpu")
    quota = np.array([a.episodes // n + (i < a.episodes % n) for i in range(n)])
    played = np.zeros(n, dtype=int)
    games, logs, kept, frames = [], [[] for _ in range(n)], {}, [[] for _ in range(n)]
    obs = env.reset()
    tobs, _ = twin.reset(seed=np.arange(n) + a.seed)
    feat = features(tobs[:, 0])
    for i in range(n):
        frames[i].append(zlib.compress(tobs[i, 0].tobytes(), 1))
    while (played < quota).any():
        actions = pick(obs)
        step = env.step(actions)
        tobs, rewards, _, _, _ = twin.step(actions)
        assert np.array_equal(rewards, step.rewards), "the twin env is out of step"
        for i in range(n):  # the state the action was taken in, the action, its reward
            logs[i].append((*feat[i], int(actions[i]), float(step.rewards[i])))
        feat = features(tobs[:, 0])
        for i in range(n):
            frames[i].append(zlib.compress(tobs[i, 0].tobytes(), 1))
        obs = step.obs
        for i, score, length in zip(np.flatnonzero(step.dones), step.scores, step.lengths):
            if played[i] < quota[i]:
                played[i] += 1
                g = dict(env=int(i), game=int(played[i]), score=float(score), length=int(length))
                g["order"], g["log"] = len(games), logs[i]
                games.append(g)
                if score < a.keep:  # the frame appended last is the next game's first
                    kept[(int(i), int(played[i]))] = frames[i][:-1]
            logs[i], frames[i] = [], frames[i][-1:]
    return dict(games=games, kept=kept)


def lost_points(g: dict) -> None:
    """Adds to game g: lost, lost_top (paddle at the top wall), lost_same (ball path as the previous
    lost point's), longest_losing_run."""
    log = np.array(g["log"], dtype=float)  # paddle top, bottom, ball y, x, action, reward
    reward = log[:, 5]
    top = same = run = best = 0
    prev = None
    for t in np.flatnonzero(reward != 0):
        if reward[t] > 0:
            run = 0
            continue
        run += 1
        best = max(best, run)
        window = log[max(0, t - 12) : t + 1]
        near = window[(window[:, 3] >= 136) & (window[:, 3] <= 146)]  # the ball at the paddle's column
        row = near[-1] if len(near) else window[-1]
        top += row[0] <= TOP_WALL
        path = tuple(map(tuple, log[max(0, t - 20) : t + 1, 2:4].astype(int)))
        same += path == prev
        prev = path
    g.update(lost=int((reward < 0).sum()), lost_top=int(top), lost_same=int(same), longest_losing_run=best)
    g["steps_top"] = int((log[:, 0] <= TOP_WALL).sum())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--episodes", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--keep", type=float, default=10, help="keep the frames of games scoring below this")
    p.add_argument("--checkpoint", default="agents/PongNoFrameskip-v4-wallclock.pt")
    p.add_argument("--out", default="replay")
    a = p.parse_args()
    result = play(a)
    total = collections.Counter()
    for g in result["games"]:
        lost_points(g)
        for k in ("lost", "lost_top", "lost_same", "steps_top", "length"):
            total[k] += g[k]
        if g["score"] < 15:
            print({k: v for k, v in g.items() if k != "log"})
    pickle.dump(result, open(f"{a.out}.pkl", "wb"))
    scores = [g["score"] for g in result["games"]]
    print(f"{len(scores)} games, mean {np.mean(scores):.2f}; scores in the order they ended: {scores}")
    print(f"lost points: {total['lost']}, {total['lost_top']} with the paddle at the top wall, "
          f"{total['lost_same']} the same path as the previous lost point; paddle at the top wall in "
          f"{total['steps_top'] / total['length']:.0%} of steps")  # fmt: skip
    runs = collections.Counter(g["longest_losing_run"] for g in result["games"])
    print("games by longest run of lost points:", dict(sorted(runs.items())))


if __name__ == "__main__":
    main()

"""Atari environments on real ale-py emulators: names, frame accounting, backends, training semantics."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppo1 import envspec
from ppo1.config import Config
from ppo1.envs import VecEnv, make_gym_env
from ppo1.envspec import parse_env_name
from ppo1.errors import ConfigError
from ppo1.policies import make_policy
from ppo1.rollout import Rollout

# ---------------------------------------------------------------------------------------------
# (a) environment names


@pytest.mark.parametrize(
    "name, game, title, sticky",
    [
        ("PongNoFrameskip-v4", "pong", "Pong", 0.0),
        ("Pong", "pong", "Pong", 0.0),
        ("ALE/Pong-v5", "pong", "Pong", 0.25),
        ("ALE/MsPacman-v5", "ms_pacman", "MsPacman", 0.25),
        ("MsPacmanNoFrameskip-v4", "ms_pacman", "MsPacman", 0.0),
        ("BreakoutNoFrameskip-v4", "breakout", "Breakout", 0.0),
    ],
)
def test_parse_env_name(name, game, title, sticky):
    spec = parse_env_name(name)
    assert (spec.name, spec.game, spec.title, spec.sticky) == (name, game, title, sticky)


@pytest.mark.parametrize("name", ["Pongg", "PongNoFrameskip-v5", "ALE/Pongg-v5", "ALE/Pong-v4", ""])
def test_unknown_env_name_is_a_one_line_config_error(name):
    with pytest.raises(ConfigError) as e:
        parse_env_name(name)
    msg = str(e.value)
    assert "\n" not in msg and repr(name) in msg


def test_misspelled_name_suggests_the_real_one():
    with pytest.raises(ConfigError, match=r"did you mean .*\bPong\b"):
        parse_env_name("Pongg")
    with pytest.raises(ConfigError, match="BreakoutNoFrameskip-v4"):
        parse_env_name("BreakoutNoFrameskip-v3")


# ---------------------------------------------------------------------------------------------
# (b) the emulator's own frame counter
#
# Reset presses FIRE for one frame in games that have a FIRE action (FireOnReset on the gym path,
# use_fire_reset in ale-py's vector env); with noop_max=0 no no-op frames follow. Each agent step
# then is FRAME_SKIP = 4 emulator frames. So after k steps the episode frame number is 4k + 1 in
# Pong, and 4k in Freeway, which has no FIRE action (NOOP, UP, DOWN): that is where the 1 comes from.

STEPS = [0, 1, 2, 10, 50]


@pytest.mark.parametrize("game, fire_frames", [("Pong", 1), ("Freeway", 0)])
def test_frame_counter_gym_path(game, fire_frames):
    env = make_gym_env(parse_env_name(game), noop_max=0)
    try:
        env.reset(seed=0)
        ale = env.unwrapped.ale
        seen = {0: ale.getEpisodeFrameNumber()}
        for k in range(1, max(STEPS) + 1):
            _, _, terminated, truncated, info = env.step(0)
            assert not (terminated or truncated)
            seen[k] = ale.getEpisodeFrameNumber()
            assert info["episode_frame_number"] == seen[k]
        assert [seen[k] for k in STEPS] == [4 * k + fire_frames for k in STEPS]
    finally:
        env.close()


@pytest.mark.parametrize("game, fire_frames", [("Pong", 1), ("Freeway", 0)])
def test_frame_counter_ale_vector_backend(game, fire_frames):
    # VecEnv.step hides the info dict; step the ale-py vector env it configured directly.
    env = VecEnv(parse_env_name(game), 2, seed=0, noop_max=0, threads=1)
    try:
        _, info = env.vec.reset(seed=np.array([0, 1]))
        seen = {0: info["episode_frame_number"].tolist()}
        for k in range(1, max(STEPS) + 1):
            _, _, terminated, truncated, info = env.vec.step(np.zeros(2, dtype=np.int64))
            assert not (terminated.any() or truncated.any())
            seen[k] = info["episode_frame_number"].tolist()
        assert [seen[k] for k in STEPS] == [[4 * k + fire_frames] * 2 for k in STEPS]
    finally:
        env.close()


def test_noop_reset_adds_at_most_30_frames():
    env = make_gym_env(parse_env_name("Pong"))  # noop_max=30
    try:
        frames = []
        for seed in range(8):
            env.reset(seed=seed)
            frames.append(env.unwrapped.ale.getEpisodeFrameNumber())
        assert all(1 <= f <= 31 for f in frames)
        assert len(set(frames)) > 1  # the number of no-ops is random
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------
# (c) the two backends agree


def test_ale_and_gym_backends_are_identical_on_breakout():
    spec = parse_env_name("BreakoutNoFrameskip-v4")
    kw = dict(seed=0, noop_max=0, episode_life=True, clip_rewards=True)
    a = VecEnv(spec, 2, backend="ale", threads=1, **kw)
    b = VecEnv(spec, 2, backend="gym", **kw)
    try:
        assert a.observation_shape == b.observation_shape == (4, 84, 84)
        assert a.num_actions == b.num_actions == 4
        assert np.array_equal(a.reset(), b.reset())
        rng = np.random.default_rng(0)
        dones = scores = finals = 0
        prev = None
        for t in range(300):
            actions = rng.integers(0, a.num_actions, size=2)
            sa, sb = a.step(actions), b.step(actions)
            assert np.array_equal(sa.obs, sb.obs), t
            assert np.array_equal(sa.rewards, sb.rewards), t
            assert np.array_equal(sa.dones, sb.dones), t
            assert np.array_equal(sa.truncated, sb.truncated), t
            assert (sa.scores, sa.lengths, sa.clipped_returns) == (sb.scores, sb.lengths, sb.clipped_returns)
            assert (sa.final_obs is None) == (sb.final_obs is None) == (not sa.scores), t
            if sa.final_obs is not None:
                assert sa.final_obs.shape == sb.final_obs.shape == (2, 4, 84, 84)
                assert sa.final_obs.dtype == sb.final_obs.dtype == np.uint8
                if len(sa.scores) == sa.dones.sum():  # every done here is a game end
                    for i in np.flatnonzero(sa.dones):
                        # The game's last observation, not the new game's first one ...
                        assert np.array_equal(sa.final_obs[i], sb.final_obs[i])
                        assert not np.array_equal(sa.final_obs[i], sa.obs[i])
                        # ... continuing the frame stack of the step before.
                        assert np.array_equal(sa.final_obs[i, :3], prev[i, 1:])
                        finals += 1
            prev = sa.obs
            dones += int(sa.dones.sum())
            scores += len(sa.scores)
        # Life losses and whole games both happened, so the comparison covered them.
        assert dones > scores >= 1 and finals >= 1
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------------------------
# (d) training semantics: life loss ends the episode, scores are whole games


def test_life_loss_episodes_and_real_scores_on_breakout():
    """Two copies of the same games (same seed, same actions): the training env (episode_life)
    and the evaluation env (full games). Raw rewards in both, so the score is checkable."""
    spec = parse_env_name("Breakout")
    train = VecEnv(spec, 2, seed=3, episode_life=True, clip_rewards=False, threads=1)
    evals = VecEnv(spec, 2, seed=3, episode_life=False, clip_rewards=False, threads=1)
    try:
        assert np.array_equal(train.reset(), evals.reset())
        rng = np.random.default_rng(1)
        dones_in_game = np.zeros(2, dtype=int)
        raw_in_game = np.zeros(2)
        steps_in_game = np.zeros(2, dtype=int)
        games = 0
        for _ in range(700):
            actions = rng.integers(0, train.num_actions, size=2)
            st, se = train.step(actions), evals.step(actions)
            assert np.array_equal(st.obs, se.obs) and np.array_equal(st.rewards, se.rewards)
            dones_in_game += st.dones
            raw_in_game += st.rewards
            steps_in_game += 1
            game_over = se.dones  # with episode_life=False a done is a whole game
            # Every evaluation done is a game end, and only game ends report scores.
            assert len(se.scores) == len(st.scores) == int(game_over.sum())
            # A game end is always also a training episode end.
            assert np.all(st.dones[game_over])
            if game_over.any():
                ended = np.flatnonzero(game_over)
                # Breakout has 5 lives: 4 life-loss episode ends, then the game-over one.
                assert dones_in_game[ended].tolist() == [5] * len(ended)
                assert st.scores == se.scores == raw_in_game[ended].tolist()
                assert st.lengths == se.lengths == steps_in_game[ended].tolist()
                dones_in_game[ended] = raw_in_game[ended] = steps_in_game[ended] = 0
                games += len(ended)
            else:
                assert st.scores == [] and st.lengths == []
        assert games >= 4
        assert 0 < dones_in_game.sum()  # life losses inside the running games, no score yet
    finally:
        train.close()
        evals.close()


def test_clipped_returns_are_per_life_episode():
    spec = parse_env_name("Breakout")
    env = VecEnv(spec, 1, seed=5, episode_life=True, clip_rewards=True, threads=1)
    try:
        env.reset()
        rng = np.random.default_rng(5)
        acc = 0.0
        episodes = 0
        for _ in range(400):
            s = env.step(rng.integers(0, env.num_actions, size=1))
            acc += float(s.rewards[0])
            if s.dones[0]:
                assert s.clipped_returns == [acc]
                acc, episodes = 0.0, episodes + 1
            else:
                assert s.clipped_returns == []
        assert episodes >= 5
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------
# (e) reward clipping keeps the real score


def test_reward_clipping_on_space_invaders():
    """Space Invaders pays 5..30 per alien; a random agent scores within ~40 steps and loses its
    3 lives in ~450. The same game is played with and without clipping (same seed and actions)."""
    spec = parse_env_name("SpaceInvaders")
    clipped = VecEnv(spec, 1, seed=0, clip_rewards=True, threads=1)
    raw = VecEnv(spec, 1, seed=0, clip_rewards=False, threads=1)
    try:
        clipped.reset()
        raw.reset()
        rng = np.random.default_rng(0)
        raw_rewards = []
        for _ in range(2000):
            actions = rng.integers(0, clipped.num_actions, size=1)
            sc, sr = clipped.step(actions), raw.step(actions)
            assert set(sc.rewards.tolist()) <= {-1.0, 0.0, 1.0}
            assert np.array_equal(sc.rewards, np.sign(sr.rewards))
            assert np.array_equal(sc.dones, sr.dones)
            raw_rewards.append(float(sr.rewards[0]))
            if sc.scores:
                break
        assert max(raw_rewards) > 1, "no reward above 1 seen: the clipping case was not exercised"
        # The logged score is the real game score, not the sum of clipped rewards.
        assert sc.scores == sr.scores == [sum(raw_rewards)]
        assert sc.scores[0] > sum(np.sign(raw_rewards))
    finally:
        clipped.close()
        raw.close()


# ---------------------------------------------------------------------------------------------
# (f) observations


@pytest.mark.parametrize("backend", ["ale", "gym"])
@pytest.mark.parametrize("frame_stack, channels", [(True, 4), (False, 1)])
def test_observation_shape_and_dtype(backend, frame_stack, channels):
    env = VecEnv(parse_env_name("Pong"), 3, seed=0, frame_stack=frame_stack, backend=backend, threads=1)
    try:
        assert env.observation_shape == (channels, 84, 84)
        assert env.num_actions == 6
        obs = env.reset()
        assert obs.dtype == np.uint8 and obs.shape == (3, channels, 84, 84)
        assert obs[:, -1].max() > 0  # the newest frame is a real picture
        s = env.step(np.zeros(3, dtype=np.int64))
        assert s.obs.dtype == np.uint8 and s.obs.shape == (3, channels, 84, 84)
        assert s.rewards.dtype == np.float32 and s.rewards.shape == (3,)
        assert s.dones.dtype == np.bool_ and s.dones.shape == (3,)
        assert s.truncated.shape == (3,)
        if frame_stack:
            # The stack shifts by one frame per step: the old newest frame is now second-newest.
            assert np.array_equal(s.obs[:, -2], obs[:, -1])
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------
# (g) time limits: a real terminal state on the last allowed step is not bootstrapped


class EndsAt(gym.Env):
    """Observation [t, 1]; reward 1 per step; terminates after `end` steps (never, if None)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, end=None, render_mode=None):
        self.end, self.t = end, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0, 1.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t, 1.0], np.float32), 1.0, self.t == self.end, False, {}


LIMIT = 3
gym.register(
    "ppo1test/TerminatesAtLimit-v0", entry_point=EndsAt, kwargs={"end": LIMIT}, max_episode_steps=LIMIT
)
gym.register("ppo1test/OutlivesLimit-v0", entry_point=EndsAt, max_episode_steps=LIMIT)


@pytest.mark.parametrize("name, terminal", [("TerminatesAtLimit", True), ("OutlivesLimit", False)])
def test_terminating_on_the_last_allowed_step_is_not_a_truncation(name, terminal):
    envspec._gym_ids.cache_clear()  # the test envs were registered after the first lookup
    env = VecEnv(parse_env_name(f"ppo1test/{name}-v0"), 2, seed=0)
    policy = make_policy(Config(model_type="mlp"), env.observation_shape, env.num_actions, env.discrete)
    with torch.no_grad():  # V(final obs) = 5 everywhere, so a bootstrap would show in the reward
        policy.vf[-1].weight.zero_()
        policy.vf[-1].bias.fill_(5.0)
    try:
        env.reset()
        raw = [env.step(np.zeros(2, dtype=np.int64)) for _ in range(LIMIT - 1)]
        last = env.step(np.zeros(2, dtype=np.int64))
        assert not any(s.dones.any() for s in raw)
        assert last.dones.all()
        assert last.truncated.tolist() == [not terminal] * 2
        cfg = Config(timesteps_per_actorbatch=LIMIT, gamma=0.9)
        seg = Rollout(env, policy, cfg, device=torch.device("cpu")).collect()
    finally:
        env.close()
    assert seg.dones[LIMIT - 1].tolist() == [1.0, 1.0]
    want = 1.0 if terminal else 1.0 + 0.9 * 5.0  # bootstrapped only where the time limit cut it
    assert seg.rewards[LIMIT - 1].tolist() == pytest.approx([want, want])
    assert seg.rewards[: LIMIT - 1].flatten().tolist() == [1.0] * (2 * (LIMIT - 1))

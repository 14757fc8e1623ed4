"""The job driver: which task and seed next, the sync / async-episode / T-PPO-window schedules, the
staleness gate, rollout statistics. It talks to rollout replicas only through services/rollout_api.py and
reads the learner's progress only from the job's Redis keys (services/queue.py); it holds no training and
no generation logic. See orchestrator/README.md.
"""

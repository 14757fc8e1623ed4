"""The programs that compose every service: the `payoff` CLI, the local stack (`payoff serve`), the demo.

This is the one package allowed to import every service package (the composition root); the services
themselves only meet through services/ contracts.
"""

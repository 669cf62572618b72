"""`headwater demo`: a whole local run — stack, learner, replay, and a scored summary."""

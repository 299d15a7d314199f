"""The continuity engine: decides from probe evidence when Exchange is dead, holds mail during a
continuity event, and replays it when Exchange is back."""

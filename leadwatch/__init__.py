"""leadwatch's framework core: the vocabulary every control process speaks (events, effects,
calendar, tenant configuration), the state store, dispatch, scheduling and the executor that
performs effects exactly once. The core never imports a process; processes (workflows/) stand
on it and are listed in one registry."""

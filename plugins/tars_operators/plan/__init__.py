"""Pure planning: hosts × strategy → stages and budgets (ramp), deploy windows and freezes."""

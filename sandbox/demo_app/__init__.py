"""Source of the demo app packaged into release tarballs (app.py, bin/demo-ctl)."""

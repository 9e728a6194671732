"""Running the app under uvicorn, with bounded connections and a graceful drain. Internal."""

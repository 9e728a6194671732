"""Stand-in providers that speak each vendor's wire format: test doubles with canned answers,
for the tests, the benchmarks and `kallm demo`. `openai` holds the request record and the
helpers the other stand-ins share; `app` puts them together (`python -m kallm.simulator`)."""

"""The job steps that pipelines run: data-test, train, evaluate, export, report, deploy,
drift and retrain. Each writes into the model's working folder ``.ci-mlops/<model>/``."""

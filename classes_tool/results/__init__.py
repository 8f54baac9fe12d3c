"""What every campaign target shares: outcome classes, statistics, the result store, the report.

It imports no target and no TensorFlow (`classes-tool report` starts without it): targets write
rows into `store.ResultStore` and this package reads them back, whatever target wrote them.
"""

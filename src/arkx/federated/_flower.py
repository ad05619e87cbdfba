"""Everything arkx uses from Flower, imported in one place: Flower is an optional dependency
(``pip install 'arkx[federated]'``), and without it this is one clear error instead of a traceback."""

from ..errors import ArkxRuntimeError

try:
    from flwr.client import Client, start_client
    from flwr.common import (
        Code,
        DisconnectRes,
        EvaluateIns,
        EvaluateRes,
        FitIns,
        FitRes,
        GetParametersIns,
        GetParametersRes,
        GetPropertiesIns,
        GetPropertiesRes,
        Parameters,
        ReconnectIns,
        Status,
        ndarrays_to_parameters,
        parameters_to_ndarrays,
    )
    from flwr.server import Server, ServerConfig, start_server
    from flwr.server.client_manager import ClientManager, SimpleClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.history import History
    from flwr.server.strategy import Strategy
except ImportError as err:
    raise ArkxRuntimeError(f"federated training needs Flower ({err}); install it with "
                           "`pip install 'arkx[federated]'`") from None

__all__ = ["Client", "ClientManager", "ClientProxy", "Code", "DisconnectRes", "EvaluateIns", "EvaluateRes", "FitIns",
           "FitRes", "GetParametersIns", "GetParametersRes", "GetPropertiesIns", "GetPropertiesRes", "History",
           "Parameters", "ReconnectIns", "Server", "ServerConfig", "SimpleClientManager", "Status", "Strategy",
           "ndarrays_to_parameters", "parameters_to_ndarrays", "start_client", "start_server"]

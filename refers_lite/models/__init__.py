"""The REFERS model, one module per concept of the paper's Figure 1."""
from .classifier import RadiographClassifier
from .radiograph_transformer import RadiographTransformer, RecurrentConcatenation
from .refers import REFERS, REFERSOutput, StudyFeatures
from .report_transformer import ReportTransformer
from .text_encoder import TextEncoder, load_text_tokenizer
from .view_fusion import ViewFusion

__all__ = ["REFERS", "REFERSOutput", "StudyFeatures", "RadiographTransformer", "RecurrentConcatenation",
           "ReportTransformer", "TextEncoder", "ViewFusion", "RadiographClassifier", "load_text_tokenizer"]
